"""Reader for the IDX format (MNIST's file format), gzipped or raw, with sha256 verification.

IDX layout (big-endian): two zero bytes, a type code (0x08 ubyte, 0x09 byte, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, one int32 per dimension,
then the values in C order.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import zlib

import numpy as np

__all__ = ["read_idx", "parse_idx", "sha256_file", "IDXError", "ChecksumError"]

_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


class IDXError(ValueError):
    """A file is not a well-formed IDX file (bad header, truncated, corrupt compression)."""


class ChecksumError(ValueError):
    """A file's sha256 differs from the expected one."""


def sha256_file(path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def _check_sha256(data: bytes, expected: str, source: str) -> None:
    got = hashlib.sha256(data).hexdigest()
    if got != expected.lower():
        raise ChecksumError(
            f"sha256 mismatch for {source}: expected {expected.lower()}, got {got}. The file "
            f"is corrupt, truncated or not the file it is named after; delete it and fetch it "
            f"again (or pass verify=False to skip the check)")


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file into an array in native byte order."""
    if len(data) < 4:
        raise IDXError(f"{source} is truncated: {len(data)} bytes, shorter than the 4-byte "
                       f"IDX magic number")
    if data[0] != 0 or data[1] != 0:
        raise IDXError(f"{source} is not an IDX file: it starts with bytes "
                       f"{data[:4].hex()} instead of 0000<type><ndim>")
    code, ndim = data[2], data[3]
    if code not in _IDX_TYPES:
        raise IDXError(f"{source} has an unknown IDX type code 0x{code:02x} (expected one of "
                       + ", ".join(f"0x{c:02x}" for c in _IDX_TYPES) + ")")
    if ndim == 0:
        raise IDXError(f"{source} declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"{source} is truncated inside its header: {len(data)} bytes, the "
                       f"header of a {ndim}-dimensional IDX file needs {header}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[code]
    n_values = 1
    for d in shape:
        n_values *= d
    expected = n_values * dtype.itemsize
    got = len(data) - header
    if got < expected:
        raise IDXError(f"{source} is truncated: its header declares shape {shape} "
                       f"({expected} bytes of data) but only {got} bytes follow")
    if got > expected:
        raise IDXError(f"{source} is corrupt: its header declares shape {shape} "
                       f"({expected} bytes of data) but {got} bytes follow")
    arr = np.frombuffer(data, dtype=dtype, count=n_values, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path, *, sha256: str | None = None) -> np.ndarray:
    """Read an IDX file, gzipped (detected by its magic bytes) or raw.

    Parameters
    ----------
    path : str or os.PathLike
    sha256 : str, optional
        Expected hex sha256 of the file *as stored* (the .gz file for a gzipped one); a mismatch
        raises :class:`ChecksumError`.

    Returns
    -------
    ndarray with the file's shape and element type (native byte order, writeable).

    Raises
    ------
    FileNotFoundError
    ChecksumError
    IDXError
        The file is truncated, corrupt or not IDX.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if sha256 is not None:
        _check_sha256(raw, sha256, path)
    if raw[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(raw)
        except EOFError as e:
            raise IDXError(f"{path} is truncated: the gzip stream ends early ({e})") from None
        except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise IDXError(f"{path} is corrupt: invalid gzip data ({e})") from None
        source = f"{path} (decompressed)"
    else:
        data = raw
        source = path
    return parse_idx(data, source)
