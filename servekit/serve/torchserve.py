"""Start and stop a real TorchServe on free loopback ports, isolated in its own working directory."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from servekit.serve.client import Tokens, TorchServeClient

# The checkout's top-level config.properties, linked into the package (a real file in an installed wheel).
DEFAULT_CONFIG = Path(__file__).resolve().parent / "config.properties"
REPO_ROOT = Path(__file__).resolve().parents[2]  # a checkout's root: tests and the docs harness only
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
HTTP_ADDRESS_KEYS = ("inference_address", "management_address", "metrics_address")
GRPC_PORT_KEYS = ("grpc_inference_port", "grpc_management_port")


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Ports:
    """The HTTP inference, management and metrics ports, and the two gRPC ports TorchServe always opens."""

    inference: int
    management: int
    metrics: int
    grpc_inference: int
    grpc_management: int

    @classmethod
    def free(cls) -> Ports:
        """Five free ports."""
        return cls(*(free_port() for _ in range(5)))


def render_config(template: str, ports: Ports) -> str:
    """config.properties with every listener moved to ``ports`` (still on 127.0.0.1)."""
    settings = {key: f"http://127.0.0.1:{port}"
                for key, port in zip(HTTP_ADDRESS_KEYS, (ports.inference, ports.management, ports.metrics))}
    settings.update(zip(GRPC_PORT_KEYS, (str(ports.grpc_inference), str(ports.grpc_management))))
    for key, value in settings.items():
        template, count = re.subn(rf"(?m)^{key}=.*$", f"{key}={value}", template)
        if count != 1:
            raise ValueError(f"config template must set {key} exactly once")
    return template


class UnsafeModelStore(RuntimeError):
    """The model store holds an entry that leads outside it; TorchServe would load it."""


def check_model_store(model_store: Path) -> None:
    """Refuse a store whose entries lead outside it (a symlink to another folder, or to a file there).

    TorchServe 0.12 resolves ``url=NAME.mar`` to ``<store>/NAME.mar`` and follows symlinks; nothing in
    its configuration refuses one, so we check before it starts (SECURITY.md says what remains).
    """
    store = Path(model_store).resolve()
    for entry in sorted(Path(model_store).iterdir()):
        target = entry.resolve()
        if entry.is_symlink() and not target.is_relative_to(store):
            raise UnsafeModelStore(f"{entry} points outside the model store (to {target}); TorchServe would "
                                   "load it. Copy the archive into the store instead of linking it")


# A unix socket's path holds at most 107 bytes (sun_path, 108 with its NUL); a worker whose path is longer
# cannot bind and TorchServe answers "Failed to start workers".
UNIX_PATH_MAX = 107
LONGEST_SOCKET_NAME = ".ts.sock.65535"
PRIVATE_SOCKETS_PREFIX = "ts-sockets-"


def socket_folder(preferred: Path) -> Path:
    """Where a TorchServe's workers put their unix sockets: ``preferred`` when the longest socket path fits the
    kernel's limit, else a new private folder of short name in the system's temp folder (never shared)."""
    if len(os.fsencode(preferred.resolve())) + 1 + len(LONGEST_SOCKET_NAME) <= UNIX_PATH_MAX:
        return preferred
    return Path(tempfile.mkdtemp(prefix=PRIVATE_SOCKETS_PREFIX, dir="/tmp" if os.path.isdir("/tmp") else None))


def private_temp(folder: Path) -> dict[str, str]:
    """The environment for a TorchServe of its own in ``folder``: TMPDIR holds its pid file, TEMP becomes the JVM's
    temp folder, where each worker's unix socket is named by its port (9000 upward in every server). In a
    shared /tmp a second server's worker would remove the first one's socket and take its name."""
    return {**os.environ, "TMPDIR": str(folder), "TEMP": str(socket_folder(folder))}


class TorchServe:
    """A TorchServe process we own: started in the foreground of its own process group."""

    def __init__(self, model_store: Path, workdir: Path, ports: Ports | None = None,
                 config_template: Path = DEFAULT_CONFIG, env: dict[str, str] | None = None) -> None:
        self.model_store = Path(model_store).resolve()
        self.workdir = Path(workdir).resolve()
        self.ports = ports or Ports.free()
        self.config_template = config_template
        self.extra_env = env or {}
        self.process: subprocess.Popen | None = None
        self.env: dict[str, str] | None = None
        self.client: TorchServeClient | None = None

    @property
    def log_dir(self) -> Path:
        """Where TorchServe writes ts_log.log, model_log.log, model_metrics.log."""
        return self.workdir / "logs"

    def command(self) -> list[str]:
        """The command line, as a user would type it (plus --foreground so we own the process)."""
        # Workflows (.war) sit beside the .mar files they name: one store for both.
        return [str(Path(sys.executable).parent / "torchserve"), "--start", "--foreground",
                "--model-store", str(self.model_store), "--workflow-store", str(self.model_store),
                "--ts-config", str(self.workdir / "config.properties")]

    def start(self, timeout_s: float = START_TIMEOUT_S) -> TorchServeClient:
        """Start, wait for /ping to be Healthy, read the token file; return a ready client."""
        check_model_store(self.model_store)
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "tmp").mkdir(exist_ok=True)
        # The pid file lives in our private TMPDIR: a leftover one only blocks the start.
        (self.workdir / "tmp" / ".model_server.pid").unlink(missing_ok=True)
        (self.workdir / "config.properties").write_text(render_config(self.config_template.read_text(), self.ports))
        key_file = self.workdir / "key_file.json"
        key_file.unlink(missing_ok=True)
        self.env = env = {**private_temp(self.workdir / "tmp"),
               "LOG_LOCATION": str(self.log_dir), "METRICS_LOCATION": str(self.log_dir), **self.extra_env}
        with open(self.workdir / "torchserve.out", "ab") as out:
            self.process = subprocess.Popen(self.command(), cwd=self.workdir, env=env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        client = TorchServeClient(f"http://127.0.0.1:{self.ports.inference}",
                                  f"http://127.0.0.1:{self.ports.management}",
                                  f"http://127.0.0.1:{self.ports.metrics}")
        try:
            self._wait_healthy(client, key_file, timeout_s)
        except BaseException:
            self.stop()
            raise
        self.client = client
        return client

    def _wait_healthy(self, client: TorchServeClient, key_file: Path, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not client.ping():
            if client.tokens is None:
                # With token auth on, even /ping needs the inference key.
                client.tokens = read_tokens(key_file)
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"TorchServe exited with {self.process.returncode}; see {self.workdir / 'torchserve.out'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"TorchServe not healthy after {timeout_s:.0f}s; see {self.log_dir}")
            time.sleep(0.25)

    def stop(self) -> None:
        """SIGTERM the whole process group (frontend and workers); SIGKILL if it lingers."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass
        temp = Path(self.env.get("TEMP", "")) if self.env else None
        if temp is not None and temp.name.startswith(PRIVATE_SOCKETS_PREFIX):
            shutil.rmtree(temp, ignore_errors=True)  # the short socket folder made for a deep work folder

    def __enter__(self) -> TorchServeClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def latest_snapshot(log_dir: Path) -> Path:
    """The newest ``*-snapshot.cfg`` TorchServe wrote (it records every registered model and its batching)."""
    snapshots = sorted((Path(log_dir) / "config").glob("*-snapshot.cfg"))
    if not snapshots:
        raise FileNotFoundError(f"no TorchServe snapshot under {log_dir}/config")
    return snapshots[-1]


def restart_from_snapshot(server: TorchServe) -> TorchServe:
    """Stop ``server`` and start a new one from its last snapshot, as ``torchserve --ts-config SNAPSHOT`` does."""
    snapshot = latest_snapshot(server.log_dir)
    server.stop()
    restored = TorchServe(server.model_store, server.workdir, Ports.free(), config_template=snapshot,
                          env=server.extra_env)
    restored.start()
    return restored


def read_tokens(key_file: Path) -> Tokens | None:
    """The tokens, or None while TorchServe has not finished writing the key file."""
    try:
        return Tokens.from_key_file(key_file)
    except (FileNotFoundError, ValueError, KeyError):
        return None


def torchserve_available() -> bool:
    """Java and the torchserve launcher are both on this machine."""
    return shutil.which("java") is not None and (Path(sys.executable).parent / "torchserve").exists()
