"""Closed-loop HTTP load with wrk (C, event-driven): far cheaper per request than a Python client."""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

# wrk calls done() once at the end; we print one JSON line that Python parses.
LUA_TEMPLATE = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "%(content_type)s"
wrk.headers["Authorization"] = "Bearer %(token)s"
local bodies = {}
for path in io.lines("%(body_list)s") do
  local f = assert(io.open(path, "rb"))
  bodies[#bodies + 1] = f:read("*all")
  f:close()
end
wrk.body = bodies[1]
if #bodies > 1 then
  -- Several bodies (requests of different lengths): each connection's requests cycle through them.
  local counter = 0
  setup = function(thread)
    thread:set("offset", counter)
    counter = counter + 7
  end
  local next_body = nil
  request = function()
    next_body = ((next_body or (offset or 0)) %% #bodies) + 1
    return wrk.format(nil, nil, nil, bodies[next_body])
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_JSON {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"connect\\": %%d, \\"read\\": %%d, \\"write\\": %%d, " ..
    "\\"status\\": %%d, \\"timeout\\": %%d, \\"p50_us\\": %%d, \\"p90_us\\": %%d, \\"p99_us\\": %%d, \\"mean_us\\": %%f}\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


class WrkMissing(RuntimeError):
    """wrk is not installed (``apt-get install wrk``; ``make bench`` does it)."""


@dataclass(frozen=True)
class WrkResult:
    """One closed-loop run at one concurrency."""

    concurrency: int
    requests: int
    duration_s: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def throughput(self) -> float:
        """Completed requests per second (errors included in requests; see ``errors``)."""
        return self.requests / self.duration_s if self.duration_s else 0.0


def wrk_path() -> str:
    """The wrk binary, or WrkMissing."""
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing("wrk is not installed: run 'make bench' (it installs Debian's wrk) or 'apt-get install wrk'")
    return path


def run_wrk(url: str, body: Path | Sequence[Path], content_type: str, token: str, concurrency: int, duration_s: float,
            timeout_s: float = 10.0) -> WrkResult:
    """POST ``body`` to ``url`` from ``concurrency`` connections for ``duration_s`` seconds; given several
    bodies, the requests cycle through them."""
    bodies = [body] if isinstance(body, (str, Path)) else list(body)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as body_list:
        body_list.write("".join(f"{Path(b).resolve()}\n" for b in bodies))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA_TEMPLATE % {"content_type": content_type, "token": token, "body_list": body_list.name})
    threads = max(1, min(2, concurrency))
    command = [wrk_path(), f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(duration_s))}s",
               f"--timeout={timeout_s:g}s", "-s", script.name, url]
    try:
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    finally:
        Path(script.name).unlink(missing_ok=True)
        Path(body_list.name).unlink(missing_ok=True)
    line = next((text for text in out.splitlines() if text.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    data = json.loads(line[len("WRK_JSON "):])
    errors = data["connect"] + data["read"] + data["write"] + data["status"] + data["timeout"]
    return WrkResult(concurrency, data["requests"], data["duration_us"] / 1e6, errors,
                     data["p50_us"] / 1000, data["p90_us"] / 1000, data["p99_us"] / 1000)
