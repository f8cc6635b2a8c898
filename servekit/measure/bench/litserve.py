"""Start and stop the LitServe reference server (reference_servers/litserve_app.py) in its own venv, on a free
port, in its own process group; load it with wrk like every other target."""
from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from servekit.serve.torchserve import REPO_ROOT, free_port

LITSERVE_VENV = REPO_ROOT / ".venv-litserve"  # `make litserve-venv`: litserve==0.2.19, onnxruntime, pillow, tokenizers
APP = Path(__file__).resolve().parent / "reference_servers" / "litserve_app.py"
START_TIMEOUT_S = 120.0


def litserve_python() -> Path | None:
    """The venv's python, when `make litserve-venv` made it."""
    python = LITSERVE_VENV / "bin" / "python"
    return python if python.exists() else None


class LitServeServer:
    """One LitServe process serving ``model`` (an ONNX file) at ``url``."""

    def __init__(self, model: Path, kind: str, threads: int, batch_size: int, timeout_ms: float, log: Path,
                 tokenizer: Path | None = None) -> None:
        python = litserve_python()
        if python is None:
            raise FileNotFoundError(f"no LitServe venv at {LITSERVE_VENV}: run 'make litserve-venv'")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/predict"
        command = [str(python), str(APP), "--model", str(model), "--kind", kind, "--port", str(self.port),
                   "--threads", str(threads), "--batch", str(batch_size), "--timeout-ms", str(timeout_ms)]
        if tokenizer is not None:
            command += ["--tokenizer", str(tokenizer)]
        self.log = open(log, "ab")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                        env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"})
        self._wait_healthy(log)

    def _wait_healthy(self, log: Path) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"LitServe exited with {self.process.returncode}; see {log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"LitServe not healthy after {START_TIMEOUT_S:.0f} s; see {log}")

    def stop(self) -> None:
        """SIGTERM its process group (the server and its inference workers); SIGKILL if it lingers."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass
        self.log.close()
