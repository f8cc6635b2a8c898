"""The typed client's handling of TorchServe answers that need more than a status check.

TorchServe 0.12's shutdown race cannot be triggered on demand, so this replays the answers it gave
in a failed CI run (recorded in its ts_log.log: the model was removed, then stopping its worker
raised) from a small local HTTP server.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from servekit.serve.client import TorchServeClient, TorchServeError

RACE_ANSWER = {"code": 500, "type": "ConcurrentModificationException"}


def _replaying(delete_answer: tuple[int, dict], models: list[str]) -> ThreadingHTTPServer:
    class Management(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_DELETE(self) -> None:  # noqa: N802 (http.server's naming)
            self._send(*delete_answer)

        def do_GET(self) -> None:  # noqa: N802
            self._send(200, {"models": [{"modelName": m, "modelUrl": f"{m}.mar"} for m in models]})

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Management)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def management():
    servers = []

    def start(delete_answer: tuple[int, dict], models: list[str]) -> TorchServeClient:
        server = _replaying(delete_answer, models)
        servers.append(server)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        return TorchServeClient(url, url, url, timeout_s=5)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_model_gone_after_the_shutdown_race_counts_as_unregistered(management) -> None:
    client = management((500, RACE_ANSWER), models=["other"])
    assert "unregistered" in client.unregister("warm")["status"]


def test_the_race_is_still_an_error_while_the_model_is_listed(management) -> None:
    client = management((500, RACE_ANSWER), models=["warm"])
    with pytest.raises(TorchServeError, match="ConcurrentModificationException"):
        client.unregister("warm")


def test_other_failures_are_not_swallowed(management) -> None:
    client = management((500, {"code": 500, "type": "InternalServerException", "message": "boom"}), models=[])
    with pytest.raises(TorchServeError, match="boom"):
        client.unregister("warm")


@pytest.mark.parametrize(("archive", "name"), [
    ("jar:file:///elsewhere/x.mar!/", None), ("file:digits.mar", None), ("https://example.invalid/m.mar", None),
    ("/abs/digits.mar", None), ("../digits.mar", None), ("digits.mar.zip", None),
    ("digits.mar", "../../x"), ("digits.mar", "a b"), ("digits.mar", ".hidden"), ("digits.mar", "x/y"),
])
def test_registrations_by_url_path_or_unroutable_name_are_refused_before_sending(management, archive, name) -> None:
    from servekit.serve.client import UnsafeRegistration

    client = management((200, {}), [])
    with pytest.raises(UnsafeRegistration):
        client.register(archive, model_name=name, batch_size=1, max_batch_delay_ms=1)


def test_plain_store_names_register(management) -> None:
    from servekit.serve.client import check_registration

    for archive, name in (("digits_mlp_onnx.mar", None), ("flow.war", "flow"), ("a.mar", "Model_1.2-b")):
        check_registration(archive, name)
