"""Decode an .npz body (a zip of .npy files, one per input) without pickle and without unpacking a zip bomb."""
from __future__ import annotations

import io
import zipfile
import zlib

import numpy as np

from handlers.bodies.npy import decode_npy
from handlers.errors import MalformedRequest, TooComplex, quoted

MAX_MEMBERS = 16
MAX_UNPACKED_BYTES = 64 * 1024 * 1024  # a 6 MiB body may deflate to far more; refuse before reading
NPY_SUFFIX = ".npy"
# zipfile's read() of a whole member asks zlib for up to 2 GiB at once before it cuts the result to the size
# the directory declares, so a member claiming 384 bytes could still inflate to 2 GiB first. Reading in
# chunks bounds each inflate step; the running count stops at what the member may hold.
READ_CHUNK = 1 << 16


def decode_npz(payload: bytes | str) -> dict[str, np.ndarray]:
    """``np.savez`` / ``np.savez_compressed`` output -> arrays by name (the member file names less .npy)."""
    if isinstance(payload, str):
        raise MalformedRequest("an .npz body must be binary, not text")
    try:
        archive = zipfile.ZipFile(io.BytesIO(payload))
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError) as err:
        raise MalformedRequest(f"body is not an .npz archive: {quoted(str(err), 200)}") from None
    with archive:
        members = archive.infolist()
        if not members or len(members) > MAX_MEMBERS:
            raise MalformedRequest(f"an .npz body must hold 1 to {MAX_MEMBERS} arrays; it holds {len(members)}")
        unpacked = sum(member.file_size for member in members)
        if unpacked > MAX_UNPACKED_BYTES:
            raise TooComplex(f"the .npz unpacks to {unpacked} bytes; at most {MAX_UNPACKED_BYTES}")
        arrays = {}
        for member in members:
            if not member.filename.endswith(NPY_SUFFIX):
                raise MalformedRequest(f".npz member {quoted(member.filename)} is not an .npy file")
            arrays[member.filename[:-len(NPY_SUFFIX)]] = decode_npy(read_member(archive, member))
    return arrays


def read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> bytes:
    """A member's bytes, inflated READ_CHUNK at a time and never past the size its directory entry declares
    (itself within MAX_UNPACKED_BYTES): a member that inflates to more is refused as soon as it does."""
    parts, total = [], 0
    try:
        with archive.open(member) as stream:
            while chunk := stream.read(READ_CHUNK):
                total += len(chunk)
                if total > member.file_size:
                    raise MalformedRequest(f".npz member {quoted(member.filename)} inflates past the "
                                           f"{member.file_size} bytes its directory declares")
                parts.append(chunk)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError) as err:
        raise MalformedRequest(f".npz member {quoted(member.filename)} is damaged: {quoted(str(err), 200)}") from None
    return b"".join(parts)
