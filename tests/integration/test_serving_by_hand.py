"""docs/serving.md as written, while another TorchServe (the session's) runs on the same machine."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from servekit.serve.by_hand import ServeFolder
from servekit.serve.torchserve import PRIVATE_SOCKETS_PREFIX, REPO_ROOT
from support.docs import read_page
from support.models import eager_predictions
from support.serving import LiveServer

pytestmark = pytest.mark.integration
SHARED_PID_FILE = Path(tempfile.gettempdir()) / ".model_server.pid"  # where plain `torchserve --start` keeps it


def user_folder(tmp_path: Path, model_store: Path, built) -> Path:
    """A user's folder after `make demo`: model_store/ with the archive, build/samples/ with a held-out image."""
    (tmp_path / "model_store").mkdir()
    shutil.copy(model_store / "digits_mlp_ts.mar", tmp_path / "model_store")
    (tmp_path / "build" / "samples").mkdir(parents=True)
    (tmp_path / "build" / "samples" / "digits_mlp.json").write_text(json.dumps({"data": built.x_test[0].tolist()}))
    return tmp_path


def test_the_serving_page_runs_as_written_beside_another_torchserve(live: LiveServer, model_store: Path, built_models,
                                                                    tmp_path: Path) -> None:
    [recipe] = [b.text for b in read_page(REPO_ROOT / "docs" / "serving.md").blocks if "by-hand" in b.words]
    built = built_models["digits_mlp"]
    folder = user_folder(tmp_path, model_store, built)
    shared_before = SHARED_PID_FILE.read_text() if SHARED_PID_FILE.exists() else None
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", recipe], cwd=folder, env=env, capture_output=True,
                            text=True, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "TorchServe is up" in out and "serving/key_file.json" in out and "stopped the TorchServe of serving/" in out
    answer, _ = json.JSONDecoder().raw_decode(out[out.index('{"predictions"'):])  # curl prints no newline after it
    assert answer["predictions"][0]["class"] == int(eager_predictions(built.model, built.x_test[:1])[0])
    home = ServeFolder(folder / "serving")
    assert home.running_pid() is None and not home.key_file.exists()
    assert (home.logs / "ts_log.log").exists() and (home.logs / "torchserve.out").exists()
    sockets = re.findall(r"Listening on port: (\S+)", (home.logs / "model_log.log").read_text())
    assert sockets and all(own_socket_folder(Path(s).parent, home.tmp) for s in sockets), sockets  # never /tmp's
    assert (SHARED_PID_FILE.read_text() if SHARED_PID_FILE.exists() else None) == shared_before  # never touched
    assert live.client.ping()  # the other TorchServe still serves


def test_stop_without_a_server_of_ours_stops_nothing(live: LiveServer, tmp_path: Path) -> None:
    result = subprocess.run([str(Path(sys.executable).parent / "servekit"), "stop"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "no TorchServe started from serving/ runs" in result.stdout
    assert live.client.ping()


def test_serve_refuses_taken_ports_with_a_way_out(live: LiveServer, model_store: Path, built_models,
                                                  tmp_path: Path) -> None:
    """A config whose ports the session's TorchServe holds: one line naming them, nothing started."""
    config = (live.server.workdir / "config.properties")
    folder = user_folder(tmp_path, model_store, built_models["digits_mlp"])
    result = subprocess.run([str(Path(sys.executable).parent / "servekit"), "serve", "--config", str(config)],
                            cwd=folder, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "are in use (another TorchServe?); serve on free ones with --ports auto" in result.stderr
    assert not (folder / "serving" / "tmp" / ".model_server.pid").exists()


def own_socket_folder(folder: Path, preferred: Path) -> bool:
    """The server's own folder, or the short private one made when its own is too deep for a socket path."""
    return folder == preferred or folder.name.startswith(PRIVATE_SOCKETS_PREFIX)
