"""TorchServe's workers listen on unix sockets in the JVM's temp folder (TEMP): each server gets its own, and a
short one when its own folder is too deep for a socket path (107 bytes at most, or the workers never start)."""
from __future__ import annotations

import os
from pathlib import Path

from servekit.serve.torchserve import LONGEST_SOCKET_NAME, PRIVATE_SOCKETS_PREFIX, UNIX_PATH_MAX, private_temp, socket_folder


def test_a_short_folder_keeps_the_sockets(tmp_path: Path) -> None:
    folder = Path("/tmp") / "s"
    assert socket_folder(folder) == folder
    assert private_temp(folder)["TEMP"] == private_temp(folder)["TMPDIR"] == str(folder)


def test_a_deep_folder_gets_a_short_private_one(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / "server" / "tmp"
    chosen, again = socket_folder(deep), socket_folder(deep)
    try:
        assert chosen != deep and chosen.name.startswith(PRIVATE_SOCKETS_PREFIX) and chosen.is_dir()
        assert len(os.fsencode(chosen / LONGEST_SOCKET_NAME)) <= UNIX_PATH_MAX
        assert again != chosen  # a new one each time: never shared between servers
    finally:
        chosen.rmdir(), again.rmdir()


def test_the_limit_is_counted_to_the_byte() -> None:
    fits = Path("/" + "a" * (UNIX_PATH_MAX - 2 - len(LONGEST_SOCKET_NAME)))
    assert socket_folder(fits) == fits
    one_more = socket_folder(Path(str(fits) + "a"))
    one_more.rmdir()
    assert one_more != Path(str(fits) + "a")
