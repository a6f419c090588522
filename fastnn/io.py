"""Saving and loading models: architecture as JSON, weights as arrays, no pickle.

File format (an ``.npz`` archive readable with ``np.load(path, allow_pickle=False)``):

* ``__fastnn__``: a uint8 array holding UTF-8 JSON: format name and version, fastnn version,
  dtype, the architecture (``model.get_config()``), the parameter and buffer names in order, a
  SHA-256 of every array, the loss name, and the optimizer's class, parameter mapping and
  non-array state;
* ``param:<name>`` (one per parameter, e.g. ``param:0.weight``), ``buffer:<name>`` (dropout
  counters), ``optim:<k>`` (the optimizer state's arrays).

Writes are atomic: the archive goes to a temporary file in the target's directory
(``.<name>.<random>.fastnn.tmp``, locked with ``flock`` while it is written), is flushed and
fsync'ed, then renamed over the target (``os.replace``), so a crash leaves either the old file
or the new one, never half of one. A temporary left by a killed writer is removed by the next
save into that directory (its lock is free once the writer is dead).

Loading treats the file as hostile: every problem is a :class:`ModelFileError`, and nothing is
allocated beyond what the file justifies. In order, before any array data is read: the zip
directory (size, member count, compression method and flags, declared sizes against the
stored sizes), the JSON description (size, nesting depth, schema), the member names against
the description, every ``.npy`` header (dtype, shape, size against the member's stored size),
and the parameter shapes the architecture declares against the stored shapes. Only then is
the model built and each array read (straight into the parameters), its SHA-256 checked. A
round trip is bit-exact: the arrays are stored raw.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import stat
import struct
import tokenize
import zipfile
import zlib

import numpy as np

from fastnn import losses, optim
from fastnn.layers import skip_initialization
from fastnn.module import config_parameter_shapes, module_from_config

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: temporaries are not locked nor cleaned
    fcntl = None

__all__ = ["ModelFileError", "load", "save"]

FORMAT = "fastnn-model"
VERSION = 1
_META = "__fastnn__"

#: Limits on what a file may declare (a file beyond them is refused before it costs memory).
MAX_ARRAYS = 10_000           # arrays in one file (save refuses to write more)
_MAX_JSON_DEPTH = 64          # nesting of the description (a 50-deep container stack)
_JSON_BYTES = (64 << 10, 1 << 10)   # description size: 64 KiB + 1 KiB per array
_CD_BYTES_PER_MEMBER = 400    # zip central directory size allowed per member
_DEFLATE_MAX_RATIO = 1032     # deflate cannot expand a stream more than this
_CHUNK = 1 << 20              # bytes read at a time
_TMP_SUFFIX = ".fastnn.tmp"
_TMP_NAME_BYTES = 100         # the target's name is cut to this in a temporary's name
# What the standard zip/zlib readers and numpy's .npy header parser raise on malformed data
# (zipfile raises NotImplementedError for a directory entry that needs a newer zip version;
# numpy's header parser lets tokenize's TokenError through for an unterminated header).
# Caught only around those calls, never around fastnn's own code.
_FORMAT_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError,
                  struct.error, UnicodeDecodeError, zlib.error, OverflowError, ValueError,
                  tokenize.TokenError)


class ModelFileError(ValueError):
    """A file that is not a valid fastnn model: corrupt, truncated, tampered with or
    incompatible with this version of fastnn."""


def _flat_bytes(a: np.ndarray) -> np.ndarray:
    """The bytes of ``a`` in C order as a 1-D uint8 view (a copy only if ``a`` is not
    C-contiguous)."""
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def _digest(a: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(_flat_bytes(a))
    return h.hexdigest()


# --- optimizer state: nested dicts/lists/tuples/numbers/strings/arrays <-> JSON + arrays -------
def _encode(obj, arrays: list):
    if isinstance(obj, np.ndarray):
        arrays.append(obj)
        return {"__ndarray__": len(arrays) - 1}
    if isinstance(obj, np.generic):
        return {"__scalar__": obj.dtype.str, "value": obj.item()}
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, (int, float)):
        return obj
    if isinstance(obj, dict):
        return {"__dict__": [[_encode(k, arrays), _encode(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, arrays) for v in obj]
    raise TypeError(f"cannot save optimizer state of type {type(obj).__name__}: {obj!r}")


def _decode(obj, arrays: dict):
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            key = f"optim:{obj['__ndarray__']}"
            if key not in arrays:
                raise ModelFileError(f"optimizer array {key!r} is missing")
            return arrays[key]
        if "__scalar__" in obj:
            return _scalar(obj.get("__scalar__"), obj.get("value"))
        if "__tuple__" in obj and isinstance(obj["__tuple__"], list):
            return tuple(_decode(v, arrays) for v in obj["__tuple__"])
        if "__dict__" in obj and isinstance(obj["__dict__"], list):
            out = {}
            for pair in obj["__dict__"]:
                if not (isinstance(pair, list) and len(pair) == 2):
                    raise ModelFileError(f"unexpected dict entry in the optimizer state: {pair!r}")
                k = _hashable(_decode(pair[0], arrays))
                if not isinstance(k, (str, int, float, bool, type(None))):
                    raise ModelFileError(f"unexpected dict key in the optimizer state: {k!r}")
                out[k] = _decode(pair[1], arrays)
            return out
        raise ModelFileError(f"unexpected object in the optimizer state: {str(obj)[:200]}")
    return obj


def _scalar(dtype, value):
    """A NumPy scalar of a plain numeric dtype (no structured, object or sub-array types,
    whose construction from a description could allocate at will)."""
    plain = isinstance(dtype, str) and re.fullmatch(r"[<>|=]?(b1|[iu][1248]|f[248])", dtype)
    dt = np.dtype(dtype) if plain else None
    if dt is None or not isinstance(value, (bool, int, float)):
        raise ModelFileError(f"unexpected scalar in the optimizer state: {dtype!r} {value!r}")
    try:
        return dt.type(value)
    except (OverflowError, ValueError):  # out of range, or NaN to an integer
        raise ModelFileError(f"scalar {value!r} does not fit {dt}") from None


def _hashable(k):
    return k.item() if isinstance(k, np.generic) else k


def _loss_name(loss):
    if loss is None or isinstance(loss, str):
        return loss
    return {"class": type(loss).__name__}


def save(model, path, optimizer=None, *, metadata=None) -> None:
    """Save a model (architecture, dtype, weights, dropout counters) and an optimizer's state.

    Parameters
    ----------
    model : Module (usually a Sequential)
    path : str or os.PathLike
        Written as given (``.npz`` is the customary suffix); replaced atomically.
    optimizer : fastnn.optim.Optimizer or None
        Saved with the model (for a fitted model, ``model.optimizer``) so that training can
        continue exactly; every parameter it updates must belong to ``model``. None saves no
        optimizer state.

    metadata : dict or None
        JSON-compatible notes stored in the file (``fastnn train`` records its data split and
        class labels); ``load`` returns them as ``model.metadata``.

    The loss of a fitted model (``model.loss``) is recorded by name.
    """
    path = os.fspath(path)
    named = list(model.named_parameters())
    arrays = {}
    for name, p in named:
        arrays[f"param:{name}"] = p.data
    buffers = list(model.named_buffers())
    for name, value in buffers:
        arrays[f"buffer:{name}"] = np.asarray(value)
    meta = {
        "format": FORMAT, "version": VERSION,
        "fastnn_version": _fastnn_version(),
        "dtype": np.dtype(model.dtype or np.float32).name,
        "architecture": model.get_config(),
        "parameters": [n for n, _ in named],
        "buffers": [n for n, _ in buffers],
        "loss": _loss_name(getattr(model, "loss", None)),
        "optimizer": None,
    }
    if metadata is not None:
        meta["metadata"] = json.loads(json.dumps(dict(metadata)))  # JSON-compatible, a copy
    if optimizer is not None:
        index = {id(p): i for i, (_, p) in enumerate(named)}
        groups = []
        for group in optimizer.param_groups:
            ids = []
            for p in group["params"]:
                if id(p) not in index:
                    raise ValueError("the optimizer updates a parameter that is not in the model; "
                                     "save only an optimizer built on model.parameters()")
                ids.append(index[id(p)])
            groups.append(ids)
        opt_arrays: list = []
        state = _encode(optimizer.state_dict(), opt_arrays)
        for k, a in enumerate(opt_arrays):
            arrays[f"optim:{k}"] = a
        meta["optimizer"] = {"class": type(optimizer).__name__, "groups": groups,
                             "state": state}
    if len(arrays) > MAX_ARRAYS:
        raise ValueError(f"the model has {len(arrays)} arrays to save; a fastnn model file "
                         f"holds at most {MAX_ARRAYS}")
    for key, value in arrays.items():
        problem = _dtype_problem(np.asarray(value).dtype)
        if problem:
            raise ValueError(f"cannot save {key!r}: {problem}")
    meta["checksums"] = {k: _digest(np.asarray(v)) for k, v in arrays.items()}
    blob = json.dumps(meta, allow_nan=True).encode("utf-8")
    problem = _description_problem(blob, len(arrays))
    if problem:
        raise ValueError(f"cannot save this model: {problem}")
    arrays[_META] = np.frombuffer(blob, dtype=np.uint8)
    _atomic_savez(path, arrays)


def _fastnn_version():
    import fastnn
    return getattr(fastnn, "__version__", "unknown")


def _atomic_savez(path: str, arrays: dict) -> None:
    """``np.savez(path, **arrays)`` through a locked temporary renamed over ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    _remove_stale_temporaries(directory)
    fd, tmp = _create_temporary(directory, os.path.basename(path))
    _LIVE_TEMPORARIES.add(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                pass  # a new file: os.open applied the umask
            else:
                if stat.S_ISREG(st.st_mode):  # keep the old file's permissions (not a link's)
                    os.chmod(tmp, stat.S_IMODE(st.st_mode))
            os.replace(tmp, path)  # still locked: no cleaner can take it for a stale one
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        _LIVE_TEMPORARIES.discard(tmp)
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        try:
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass


# This process's temporaries being written: on NFS, flock becomes a POSIX lock, which does not
# exclude another thread of the same process, so a cleaner also skips these.
_LIVE_TEMPORARIES: set = set()


def _create_temporary(directory: str, name: str):
    """A new file ``.<name, cut>.<random>.fastnn.tmp`` in ``directory``, opened for writing
    and flock'ed (the lock is released when it is closed or its writer dies): (fd, path).

    The name stays short (a target name of NAME_MAX bytes still gets a temporary)."""
    short = os.fsencode(name)[:_TMP_NAME_BYTES].decode("utf-8", "ignore")
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
             | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    for _ in range(100):
        tmp = os.path.join(directory, f".{short}.{secrets.token_hex(4)}{_TMP_SUFFIX}")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        if _lock_new_temporary(fd, tmp):
            return fd, tmp
        os.close(fd)  # a cleaner took it between the open and the lock: use another name
    raise FileExistsError(f"could not create a temporary file in {directory}")


def _lock_new_temporary(fd: int, tmp: str) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # a cleaner holds it and is about to remove it
    except OSError:
        return True   # no locks on this file system: no cleaner can lock it either
    try:
        return os.path.samestat(os.fstat(fd), os.lstat(tmp))
    except FileNotFoundError:
        return False  # removed by a cleaner before we locked it


def _remove_stale_temporaries(directory: str) -> None:
    """Remove the temporaries of writers that died (``kill -9``, power loss) in ``directory``.

    A temporary is stale when its ``flock`` can be taken: a live writer holds it from the
    file's creation to its rename, and the kernel releases it when the writer dies. Any
    target's stale temporary goes (checkpoints written under changing names leave theirs
    under other names). Without ``fcntl`` (Windows) nothing is removed."""
    if fcntl is None:
        return
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    for entry in entries:
        if (not (entry.name.startswith(".") and entry.name.endswith(_TMP_SUFFIX))
                or entry.path in _LIVE_TEMPORARIES):
            continue
        try:
            fd = os.open(entry.path, flags)
        except OSError:
            continue  # gone, a link, or not ours to read
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.path.samestat(st, os.lstat(entry.path)):
                    os.unlink(entry.path)
        except OSError:
            pass  # locked by a live writer, renamed meanwhile, or no locks here
        finally:
            os.close(fd)


# --- reading ---------------------------------------------------------------------------------
def _dtype_problem(dt: np.dtype):
    """Why ``dt`` cannot be an array of a model file (None if it can): plain bool, int, uint
    and float types only."""
    if dt.kind not in "biuf" or dt.fields is not None or dt.subdtype is not None:
        return f"dtype {dt} is not a plain bool, integer or float type"
    return None


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")


def _description_problem(raw: bytes, n_arrays: int):
    """Why the JSON description ``raw`` is out of bounds (None if it is not): its size
    against the number of arrays, its nesting depth (counted without recursion)."""
    limit = _JSON_BYTES[0] + _JSON_BYTES[1] * n_arrays
    if len(raw) > limit:
        return (f"the model description is {len(raw)} bytes; at most {limit} are allowed "
                f"for {n_arrays} arrays")
    brackets = _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", raw))
    depth = 0
    for start in range(0, len(brackets), 1 << 16):
        chunk = np.frombuffer(brackets, np.uint8, count=min(1 << 16, len(brackets) - start),
                              offset=start)
        steps = np.where((chunk == ord("[")) | (chunk == ord("{")), 1, -1)
        levels = np.cumsum(steps) + depth
        if levels.max() > _MAX_JSON_DEPTH:
            return f"the model description is nested more than {_MAX_JSON_DEPTH} levels deep"
        depth = int(levels[-1])
    return None


class _Header:
    """A member's ``.npy`` header: shape, dtype, Fortran order, header length."""
    __slots__ = ("shape", "dtype", "fortran", "offset")

    def __init__(self, shape, dtype, fortran, offset):
        self.shape, self.dtype, self.fortran, self.offset = shape, dtype, fortran, offset


class _Archive:
    """A model file open for reading, its zip directory checked.

    Every member is named and sized by the central directory before any of its data is read:
    at most MAX_ARRAYS + 1 members, unique ``.npy`` names, stored or deflated, not encrypted,
    declared sizes consistent with the stored sizes (a deflated member may expand at most
    _DEFLATE_MAX_RATIO times)."""

    def __init__(self, path: str):
        self.path = path
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_BINARY", 0))  # O_NONBLOCK: a FIFO must not hang us
        self._file = os.fdopen(fd, "rb")
        try:
            self._open()
        except BaseException:
            self._file.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()

    def _unreadable(self, detail) -> ModelFileError:
        return ModelFileError(f"{self.path}: not a readable fastnn model file (corrupt or "
                              f"truncated?): {detail}")

    def _open(self):
        st = os.fstat(self._file.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ModelFileError(f"{self.path}: not a regular file")
        self.size = st.st_size
        if self._file.read(6) == b"\x93NUMPY":
            raise ModelFileError(f"{self.path}: a single .npy array, not a fastnn model archive")
        try:
            problem = self._directory_problem()
            if problem is None:
                self._zip = zipfile.ZipFile(self._file)
                infos = self._zip.infolist()
        except _FORMAT_ERRORS as exc:
            raise self._unreadable(exc) from exc
        if problem is not None:
            raise self._unreadable(problem)
        self.members = {}
        for info in infos:
            problem = self._member_problem(info)
            if problem is not None:
                raise self._unreadable(f"member {info.filename!r}: {problem}")
            key = info.filename[:-4]
            if key in self.members:
                raise self._unreadable(f"member {info.filename!r} appears twice")
            self.members[key] = info

    def _directory_problem(self):
        """Find the central directory from the end record (and its zip64 form) and bound its
        size and number of entries before zipfile makes an object of each entry."""
        f, size = self._file, self.size
        tail = min(size, 22 + 0xFFFF)
        f.seek(size - tail)
        data = f.read(tail)
        at = len(data) - 22 if data[-22:-18] == b"PK\x05\x06" else data.rfind(b"PK\x05\x06")
        if at < 0 or len(data) - at < 22:
            return "no zip end record"
        end = size - tail + at
        cd_size = struct.unpack_from("<L", data, at + 12)[0]
        if at >= 20 and data[at - 20:at - 16] == b"PK\x06\x07":  # zip64
            if end < 76:
                return "truncated zip64 end record"
            f.seek(end - 76)
            record = f.read(56)
            if len(record) < 56 or record[:4] != b"PK\x06\x06":
                return "bad zip64 end record"
            cd_size = struct.unpack_from("<Q", record, 40)[0]
            end -= 76
        limit = _CD_BYTES_PER_MEMBER * (MAX_ARRAYS + 1)
        if cd_size > limit:
            return f"a zip directory of {cd_size} bytes (at most {limit} are allowed)"
        if cd_size > end:
            return "the zip directory is larger than the file"
        f.seek(end - cd_size)
        n = f.read(cd_size).count(b"PK\x01\x02")
        if n > MAX_ARRAYS + 1:
            return f"{n} zip entries (a fastnn model file has at most {MAX_ARRAYS + 1})"
        return None

    def _member_problem(self, info):
        if not info.filename.endswith(".npy"):
            return "not an .npy array"
        if info.flag_bits & 0x61:
            return "encrypted or patched data"
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            return f"compression method {info.compress_type} (only stored and deflated are read)"
        if not 0 <= info.header_offset < self.size or info.compress_size > self.size:
            return "declared outside the file"
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            return (f"stored member declares {info.file_size} bytes but stores "
                    f"{info.compress_size}")
        if info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + 64:
            return (f"declares {info.file_size} bytes from {info.compress_size} compressed "
                    f"bytes (more than deflate can produce)")
        return None

    def header(self, key: str) -> _Header:
        """Member ``key``'s .npy header, its dtype, shape and size checked against the
        member's size (nothing of the data is read)."""
        info = self.members[key]
        try:
            with self._zip.open(info) as fp:
                version = np.lib.format.read_magic(fp)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
                else:
                    shape = None
                offset = fp.tell()
        except _FORMAT_ERRORS as exc:
            raise self._unreadable(f"array {key!r}: {exc}") from exc
        if shape is None:
            raise ModelFileError(f"{self.path}: array {key!r} has .npy format version "
                                 f"{version}; fastnn model files use 1.0 or 2.0")
        problem = _dtype_problem(dtype)
        if problem is None and not all(type(n) is int and n >= 0 for n in shape):
            problem = f"shape {shape} is not a tuple of sizes"
        if problem is None:
            nbytes = math.prod(shape) * dtype.itemsize
            if offset + nbytes != info.file_size:
                problem = (f"shape {shape} and dtype {dtype} need {nbytes} bytes, the member "
                           f"holds {info.file_size - offset}")
        if problem is not None:
            raise ModelFileError(f"{self.path}: array {key!r}: {problem}")
        return _Header(tuple(shape), dtype, bool(fortran) and len(shape) > 1, offset)

    def read(self, key: str, header: _Header, checksum=None, out=None) -> np.ndarray:
        """Member ``key`` as an array (into ``out`` when given: a C-contiguous array of the
        header's shape and dtype), compared with its SHA-256 ``checksum`` when given."""
        info = self.members[key]
        if header.fortran:  # the data is the C-order transpose
            array = np.empty(header.shape[::-1], header.dtype)
        else:
            array = out if out is not None else np.empty(header.shape, header.dtype)
        view = _flat_bytes(array)
        done = 0
        try:
            with self._zip.open(info) as fp:
                fp.read(header.offset)
                while done < len(view):
                    n = fp.readinto(view[done:done + _CHUNK])
                    if not n:
                        break
                    done += n
                extra = fp.read(1)  # reaching the end also checks the zip CRC
        except _FORMAT_ERRORS as exc:
            raise self._unreadable(f"array {key!r}: {exc}") from exc
        if done < len(view) or extra:
            raise self._unreadable(f"array {key!r}: its data does not match its declared size")
        if header.fortran:
            array = array.T
            if out is not None:
                np.copyto(out, array)
                array = out
        if checksum is not None and _digest(array) != checksum:
            raise ModelFileError(f"{self.path}: checksum mismatch for {key!r}; the file is "
                                 "corrupt or was modified")
        return array

    def description(self) -> dict:
        """The JSON description, bounded in size and depth before it is parsed."""
        if _META not in self.members:
            raise ModelFileError(f"{self.path}: no {_META!r} entry; not a file written by "
                                 "fastnn.save")
        header = self.header(_META)
        if header.dtype != np.uint8 or len(header.shape) != 1:
            raise ModelFileError(f"{self.path}: the {_META!r} entry must be a 1-D uint8 array")
        limit = _JSON_BYTES[0] + _JSON_BYTES[1] * len(self.members)
        if header.shape[0] > limit:
            raise ModelFileError(f"{self.path}: the model description is {header.shape[0]} "
                                 f"bytes; at most {limit} are allowed for "
                                 f"{len(self.members)} arrays")
        raw = self.read(_META, header).tobytes()
        problem = _description_problem(raw, len(self.members))
        if problem is not None:
            raise ModelFileError(f"{self.path}: {problem}")
        try:
            meta = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ModelFileError(f"{self.path}: the model description is not UTF-8: "
                                 f"{exc}") from None
        except ValueError as exc:  # json.JSONDecodeError, or an integer of too many digits
            raise ModelFileError(f"{self.path}: the model description is not valid JSON: "
                                 f"{exc}") from None
        _check_description(self.path, meta)
        return meta

    def check_names(self, meta: dict) -> None:
        """The members against the description, before any array data is read."""
        path = self.path
        members = set(self.members) - {_META}
        checksums = meta["checksums"]
        if members != set(checksums):
            raise ModelFileError(f"{path}: the archive's entries do not match its description "
                                 f"(extra or missing arrays): unexpected "
                                 f"{_few(members - set(checksums))}, missing "
                                 f"{_few(set(checksums) - members)}")
        expected = ({f"param:{n}" for n in meta["parameters"]}
                    | {f"buffer:{n}" for n in meta["buffers"]})
        optim_keys = {k for k in checksums if re.fullmatch(r"optim:(0|[1-9][0-9]{0,5})", k)}
        if meta["optimizer"] is not None:
            expected |= optim_keys
        if set(checksums) != expected:
            raise ModelFileError(f"{path}: entries do not match the architecture: unexpected "
                                 f"{_few(set(checksums) - expected)}, missing "
                                 f"{_few(expected - set(checksums))}")


def _few(names, n=10) -> str:
    names = sorted(names)
    return str(names[:n])[:-1] + (f", ... ({len(names)} in all)]" if len(names) > n else "]")


def _check_description(path: str, meta) -> None:
    """The description's schema: every field load reads has the type it needs."""
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: bad model description (a JSON "
                             f"{type(meta).__name__}, not an object)")
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a fastnn model file (format "
                             f"{str(meta.get('format'))[:100]!r})")
    version = meta.get("version")
    if type(version) is not int or version > VERSION:
        raise ModelFileError(f"{path}: format version {str(version)[:100]!r} is newer than "
                             f"this fastnn reads ({VERSION}); upgrade fastnn")
    if version < 1:
        raise ModelFileError(f"{path}: unknown format version {version}")
    if meta.get("dtype") not in ("float32", "float64"):
        raise ModelFileError(f"{path}: unsupported dtype {str(meta.get('dtype'))[:100]!r}")

    def check(ok, what):
        if not ok:
            raise ModelFileError(f"{path}: bad model description: {what}")

    checksums = meta.get("checksums")
    check(isinstance(checksums, dict) and all(isinstance(v, str)
                                              for v in checksums.values()),
          "'checksums' must map array names to strings")
    for field in ("parameters", "buffers"):
        names = meta.get(field)
        check(isinstance(names, list) and all(isinstance(n, str) for n in names)
              and len(set(names)) == len(names), f"{field!r} must be a list of distinct names")
    check(isinstance(meta.get("architecture"), dict), "'architecture' must be an object")
    loss = meta.get("loss")
    check(loss is None or isinstance(loss, str)
          or (isinstance(loss, dict) and isinstance(loss.get("class"), str)),
          "'loss' must be null, a name or {'class': name}")
    opt = meta.get("optimizer")
    check(opt is None or (isinstance(opt, dict) and isinstance(opt.get("class"), str)
                          and isinstance(opt.get("groups"), list)
                          and all(isinstance(g, list) and all(type(i) is int for i in g)
                                  for g in opt["groups"])
                          and "state" in opt),
          "'optimizer' must be null or {'class': name, 'groups': [[index, ...]], 'state': ...}")


def _check_parameters(path, names, shapes: dict, dtype, headers: dict) -> None:
    """The parameters an architecture has (``shapes``: name -> shape, in order) against the
    description's names and the stored arrays' headers."""
    if list(shapes) != names:
        raise ModelFileError(f"{path}: parameter names {_few(names)} do not match the "
                             f"architecture's {_few(shapes)}")
    for name, shape in shapes.items():
        h = headers[f"param:{name}"]
        if h.shape != tuple(shape) or h.dtype != dtype:
            raise ModelFileError(f"{path}: parameter {name!r} has shape {h.shape} and dtype "
                                 f"{h.dtype}; the architecture needs {tuple(shape)} {dtype}")


def load(path, *, with_optimizer: bool = True):
    """Load a model saved by :func:`save`.

    Returns the model (parameters in the saved dtype, training mode). When the file holds an
    optimizer state and ``with_optimizer`` is True, the optimizer is rebuilt on the new model's
    parameters with its saved hyperparameters and state, and attached as ``model.optimizer``;
    the loss name, if saved, as ``model.loss``. Training continues exactly where it stopped.

    The file is treated as hostile (see the module docstring): nothing is allocated beyond the
    arrays it declares consistently in its description, its ``.npy`` headers and its zip
    directory, and the architecture is checked against the stored arrays before it is built.

    Raises
    ------
    FileNotFoundError, PermissionError
        The path cannot be opened.
    ModelFileError
        Anything wrong with the file: not a zip archive, corrupt, truncated or tampered with
        (checksum mismatch), limits exceeded, unknown format version or layer type, names,
        shapes or dtypes that do not match the architecture.
    """
    path = os.fspath(path)
    with _Archive(path) as archive:
        meta = archive.description()
        archive.check_names(meta)
        checksums = meta["checksums"]
        headers = {key: archive.header(key) for key in checksums
                   if with_optimizer or not key.startswith("optim:")}
        dtype = np.dtype(meta["dtype"])
        try:
            declared = config_parameter_shapes(meta["architecture"])
        except (ValueError, TypeError) as exc:
            raise ModelFileError(f"{path}: cannot rebuild the architecture: {exc}") from None
        if declared is not None:  # refuse huge declared layers before allocating them
            _check_parameters(path, meta["parameters"], declared, dtype, headers)
        try:
            with skip_initialization():  # every parameter is read from the file below
                model = module_from_config(meta["architecture"], dtype)
        except (ValueError, TypeError, KeyError) as exc:
            raise ModelFileError(f"{path}: cannot rebuild the architecture: {exc}") from None
        _check_parameters(path, meta["parameters"],
                          {n: p.data.shape for n, p in model.named_parameters()}, dtype, headers)
        buffer_names = [n for n, _ in model.named_buffers()]
        if buffer_names != meta["buffers"]:
            raise ModelFileError(f"{path}: buffer names {_few(meta['buffers'])} do not match "
                                 f"the architecture's {_few(buffer_names)}")
        state = {}
        for name, p in model.named_parameters():  # read straight into the parameters
            key = f"param:{name}"
            state[name] = archive.read(key, headers[key], checksums[key], out=p.data)
        for name in buffer_names:
            key = f"buffer:{name}"
            state[name] = archive.read(key, headers[key], checksums[key])
        try:
            model.load_state_dict(state)
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelFileError(f"{path}: {exc}") from None
        opt_meta = meta["optimizer"]
        if opt_meta is not None and with_optimizer:
            arrays = {key: archive.read(key, headers[key], checksums[key])
                      for key in checksums if key.startswith("optim:")}
            model.optimizer = _rebuild_optimizer(path, model, opt_meta, arrays)

    loss = meta["loss"]
    if hasattr(model, "loss"):
        if isinstance(loss, dict):
            cls = getattr(losses, loss["class"], None)
            loss = cls() if isinstance(cls, type) and issubclass(cls, losses.Loss) else None
        model.loss = loss
    if isinstance(meta.get("metadata"), dict):
        model.metadata = meta["metadata"]
    return model


def _rebuild_optimizer(path, model, opt_meta, data):
    cls = getattr(optim, opt_meta["class"], None)
    if not (isinstance(cls, type) and issubclass(cls, optim.Optimizer)):
        raise ModelFileError(f"{path}: unknown optimizer class {opt_meta['class'][:100]!r}")
    params = model.parameters()
    groups = opt_meta["groups"]
    if not all(0 <= i < len(params) for g in groups for i in g):
        raise ModelFileError(f"{path}: the optimizer's parameter indices are out of range")
    param_groups = [{"params": [params[i] for i in g]} for g in groups]
    state = _decode(opt_meta["state"], data)
    try:
        optimizer = cls(param_groups)
        optimizer.load_state_dict(state)
    except (KeyError, TypeError, ValueError) as exc:  # the optimizer's own checks of the state
        raise ModelFileError(f"{path}: cannot restore the {cls.__name__} state: {exc}") from None
    return optimizer
