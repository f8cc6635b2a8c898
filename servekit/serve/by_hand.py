"""Serving by hand on a shared machine: ``servekit serve`` and ``servekit stop``.

``torchserve --start`` keeps its pid file in the shared temporary folder and its key file and logs in the
folder it was started from: where another TorchServe runs it answers "already running" (so a script waiting
for the key file waits forever) and ``torchserve --stop`` would stop the other user's server. Here every
such file lives in one folder of our own (``serving/`` by default): TMPDIR (the pid file), logs/,
key_file.json and config.properties; ``serve.env`` there names the URLs and the key file for scripts.
The launcher's output goes to logs/torchserve.out, so starting is quiet; stopping reads our pid file only.
"""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from servekit.serve.client import TorchServeClient
from servekit.serve.torchserve import (DEFAULT_CONFIG, private_temp, GRPC_PORT_KEYS, HTTP_ADDRESS_KEYS, START_TIMEOUT_S,
                                       STOP_TIMEOUT_S, Ports, check_model_store, read_tokens, render_config)

DEFAULT_SERVE_DIR = Path("serving")
PID_FILE = ".model_server.pid"  # TorchServe's own name, in the TMPDIR it is given
AUTO_PORTS = "auto"
PID_GRACE_S = 10.0  # the launcher writes the pid file within this; no process by then means no server


class ServeError(RuntimeError):
    """Serving by hand cannot start or stop; the message says what to do."""


@dataclass(frozen=True)
class ServeFolder:
    """Everything one hand-started TorchServe writes: pid file, logs, key file, its config, serve.env."""

    root: Path

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def pid_file(self) -> Path:
        return self.tmp / PID_FILE

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def key_file(self) -> Path:
        return self.root / "key_file.json"

    @property
    def config(self) -> Path:
        return self.root / "config.properties"

    @property
    def env_file(self) -> Path:
        return self.root / "serve.env"

    def environment(self) -> dict[str, str]:
        """TorchServe's environment: our temp folder (its pid file, the workers' sockets) and log folders."""
        return {**private_temp(self.tmp), "LOG_LOCATION": str(self.logs), "METRICS_LOCATION": str(self.logs)}

    def running_pid(self) -> int | None:
        """The pid of the TorchServe started from this folder, if it still runs (a stale pid file is not)."""
        import psutil

        try:
            pid = int(self.pid_file.read_text().split()[0])
            command = " ".join(psutil.Process(pid).cmdline())
        except (FileNotFoundError, ValueError, IndexError, psutil.Error):
            return None
        return pid if str(self.config) in command else None  # a reused pid is someone else's process


def ports_from_config(text: str) -> Ports:
    """The five ports a config.properties names."""
    def port(key: str) -> int:
        found = re.search(rf"(?m)^{key}=(?:.*:)?(\d+)\s*$", text)
        if found is None:
            raise ServeError(f"the config sets no {key}")
        return int(found[1])

    return Ports(*(port(key) for key in (*HTTP_ADDRESS_KEYS, *GRPC_PORT_KEYS)))


def port_in_use(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def serve(model_store: Path, folder: Path = DEFAULT_SERVE_DIR, config_template: Path = DEFAULT_CONFIG,
          ports: str | None = None, models: tuple[str, ...] = (), timeout_s: float = START_TIMEOUT_S) -> TorchServeClient:
    """Start TorchServe in the background with every file it writes under ``folder``; wait until it answers.

    ``ports``: None keeps the template's (8080-8082, 7070-7071), ``"auto"`` picks free ones (printed and
    written to serve.env). ``models``: archives to load at start (``NAME.mar``). Returns a ready client.
    """
    store, home = Path(model_store).resolve(), ServeFolder(Path(folder).resolve())
    if not store.is_dir():
        raise ServeError(f"model store {model_store} does not exist (servekit archive writes it)")
    check_model_store(store)
    pid = home.running_pid()
    if pid is not None:
        raise ServeError(f"a TorchServe started from {home.root} already runs (pid {pid}); "
                         f"stop it with: servekit stop --dir {folder}")
    template = Path(config_template).read_text()
    chosen = Ports.free() if ports == AUTO_PORTS else ports_from_config(template)
    busy = [port for port in (chosen.inference, chosen.management, chosen.metrics, chosen.grpc_inference,
                              chosen.grpc_management) if port_in_use(port)]
    if busy:
        raise ServeError(f"port(s) {busy} are in use (another TorchServe?); serve on free ones with --ports auto")
    for directory in (home.tmp, home.logs):
        directory.mkdir(parents=True, exist_ok=True)
    home.pid_file.unlink(missing_ok=True)
    home.key_file.unlink(missing_ok=True)
    home.config.write_text(render_config(template, chosen))
    command = [str(Path(sys.executable).parent / "torchserve"), "--start", "--model-store", str(store),
               "--workflow-store", str(store), "--ts-config", str(home.config)]
    if models:
        command += ["--models", *models]
    with open(home.logs / "torchserve.out", "ab") as out:  # quiet: the launcher and Java log here
        subprocess.run(command, cwd=home.root, env=home.environment(), stdout=out, stderr=subprocess.STDOUT,
                       check=True, timeout=timeout_s)
    client = TorchServeClient(f"http://127.0.0.1:{chosen.inference}", f"http://127.0.0.1:{chosen.management}",
                              f"http://127.0.0.1:{chosen.metrics}")
    _wait_healthy(client, home, timeout_s)
    home.env_file.write_text(
        f"INFERENCE_URL={client.inference_url}\nMANAGEMENT_URL={client.management_url}\n"
        f"METRICS_URL={client.metrics_url}\nKEY_FILE={home.key_file}\n")
    return client


def _wait_healthy(client: TorchServeClient, home: ServeFolder, timeout_s: float) -> None:
    started = time.monotonic()
    while not client.ping():
        if client.tokens is None:
            client.tokens = read_tokens(home.key_file)  # with token auth on, even /ping needs the key
        waited = time.monotonic() - started
        if waited > PID_GRACE_S and home.running_pid() is None:
            raise ServeError(f"TorchServe did not start; see {home.logs / 'torchserve.out'}")
        if waited > timeout_s:
            raise ServeError(f"TorchServe not healthy after {timeout_s:.0f}s; see {home.logs}")
        time.sleep(0.25)


def stop(folder: Path = DEFAULT_SERVE_DIR, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
    """Stop the TorchServe started from ``folder`` (and only that one); returns its pid, None if none ran."""
    import psutil

    home = ServeFolder(Path(folder).resolve())
    pid = home.running_pid()
    if pid is None:
        home.pid_file.unlink(missing_ok=True)
        return None
    # TorchServe's own stop, pointed at our pid file (TMPDIR) and our key file (the folder it runs in).
    subprocess.run([str(Path(sys.executable).parent / "torchserve"), "--stop"], cwd=home.root,
                   env=home.environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    try:
        psutil.Process(pid).wait(timeout=timeout_s)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        psutil.Process(pid).kill()
    home.key_file.unlink(missing_ok=True)
    return pid
