"""Decode an .npz body (a zip of .npy files, one per input) without pickle and without unpacking a zip bomb."""
from __future__ import annotations

import io
import zipfile

import numpy as np

from handlers.bodies.npy import decode_npy
from handlers.errors import MalformedRequest

MAX_MEMBERS = 16
MAX_UNPACKED_BYTES = 64 * 1024 * 1024  # a 6 MiB body may deflate to far more; refuse before reading
NPY_SUFFIX = ".npy"


def decode_npz(payload: bytes | str) -> dict[str, np.ndarray]:
    """``np.savez`` / ``np.savez_compressed`` output -> arrays by name (the member file names less .npy)."""
    if isinstance(payload, str):
        raise MalformedRequest("an .npz body must be binary, not text")
    try:
        archive = zipfile.ZipFile(io.BytesIO(payload))
    except zipfile.BadZipFile as err:
        raise MalformedRequest(f"body is not an .npz archive: {err}") from None
    with archive:
        members = archive.infolist()
        if not members or len(members) > MAX_MEMBERS:
            raise MalformedRequest(f"an .npz body must hold 1 to {MAX_MEMBERS} arrays; it holds {len(members)}")
        unpacked = sum(member.file_size for member in members)
        if unpacked > MAX_UNPACKED_BYTES:
            raise MalformedRequest(f"the .npz unpacks to {unpacked} bytes; at most {MAX_UNPACKED_BYTES}")
        arrays = {}
        for member in members:
            if not member.filename.endswith(NPY_SUFFIX):
                raise MalformedRequest(f".npz member {member.filename!r} is not an .npy file")
            try:
                data = archive.read(member)
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise MalformedRequest(f".npz member {member.filename!r} is damaged: {err}") from None
            arrays[member.filename[:-len(NPY_SUFFIX)]] = decode_npy(data)
    return arrays
