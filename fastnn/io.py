"""Saving and loading models: architecture as JSON, weights as arrays, no pickle.

File format (an ``.npz`` archive readable with ``np.load(path, allow_pickle=False)``):

* ``__fastnn__``: a uint8 array holding UTF-8 JSON: format name and version, fastnn version,
  dtype, the architecture (``model.get_config()``), the parameter and buffer names in order, a
  SHA-256 of every array, the loss name, and the optimizer's class, parameter mapping and
  non-array state;
* ``param:<name>`` (one per parameter, e.g. ``param:0.weight``), ``buffer:<name>`` (dropout
  counters), ``optim:<k>`` (the optimizer state's arrays).

Writes are atomic: the archive goes to a temporary file in the target's directory, is flushed
and fsync'ed, then renamed over the target (``os.replace``), so a crash leaves either the old
file or the new one, never half of one. Loading validates everything (format, checksums, known
layer types, names, shapes, dtypes) and raises :class:`ModelFileError` with the reason. A round
trip is bit-exact: the arrays are stored raw.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

__all__ = ["ModelFileError", "load", "save"]

FORMAT = "fastnn-model"
VERSION = 1
_META = "__fastnn__"


class ModelFileError(ValueError):
    """A file that is not a valid fastnn model: corrupt, truncated, tampered with or
    incompatible with this version of fastnn."""


def _digest(a: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
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
            return np.dtype(obj["__scalar__"]).type(obj["value"])
        if "__tuple__" in obj:
            return tuple(_decode(v, arrays) for v in obj["__tuple__"])
        if "__dict__" in obj:
            return {_hashable(_decode(k, arrays)): _decode(v, arrays) for k, v in obj["__dict__"]}
        raise ModelFileError(f"unexpected object in the optimizer state: {obj!r}")
    return obj


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
    meta["checksums"] = {k: _digest(np.asarray(v)) for k, v in arrays.items()}
    blob = json.dumps(meta, allow_nan=True).encode("utf-8")
    arrays[_META] = np.frombuffer(blob, dtype=np.uint8)
    _atomic_savez(path, arrays)


def _fastnn_version():
    import fastnn
    return getattr(fastnn, "__version__", "unknown")


def _atomic_savez(path: str, arrays: dict) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        try:
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        try:
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass


def _read_archive(path: str) -> dict:
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ModelFileError(f"{path}: a single .npy array, not a fastnn model archive")
        with npz:
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise ModelFileError(f"{path}: not a readable fastnn model file (corrupt or truncated?): "
                             f"{exc}") from exc


def load(path, *, with_optimizer: bool = True):
    """Load a model saved by :func:`save`.

    Returns the model (parameters in the saved dtype, training mode). When the file holds an
    optimizer state and ``with_optimizer`` is True, the optimizer is rebuilt on the new model's
    parameters with its saved hyperparameters and state, and attached as ``model.optimizer``;
    the loss name, if saved, as ``model.loss``. Training continues exactly where it stopped.

    Raises
    ------
    FileNotFoundError
    ModelFileError
        Corrupt, truncated or tampered file (checksum mismatch), unknown format version or
        layer type, names, shapes or dtypes that do not match the architecture.
    """
    from fastnn.layers import module_from_config

    path = os.fspath(path)
    data = _read_archive(path)
    if _META not in data:
        raise ModelFileError(f"{path}: no {_META!r} entry; not a file written by fastnn.save")
    raw = data.pop(_META)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ModelFileError(f"{path}: the {_META!r} entry must be a 1-D uint8 array")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: the model description is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a fastnn model file (format {meta.get('format')!r})"
                             if isinstance(meta, dict) else f"{path}: bad model description")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise ModelFileError(f"{path}: format version {meta.get('version')!r} is newer than this "
                             f"fastnn reads ({VERSION}); upgrade fastnn")
    checksums = meta.get("checksums")
    if not isinstance(checksums, dict) or set(checksums) != set(data):
        raise ModelFileError(f"{path}: the archive's entries do not match its description "
                             f"(extra or missing arrays)")
    for key, value in data.items():
        if _digest(value) != checksums[key]:
            raise ModelFileError(f"{path}: checksum mismatch for {key!r}; the file is corrupt "
                                 "or was modified")
    dtype = meta.get("dtype")
    if dtype not in ("float32", "float64"):
        raise ModelFileError(f"{path}: unsupported dtype {dtype!r}")
    try:
        model = module_from_config(meta["architecture"], dtype)
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelFileError(f"{path}: cannot rebuild the architecture: {exc}") from None
    names = [n for n, _ in model.named_parameters()]
    if names != meta.get("parameters"):
        raise ModelFileError(f"{path}: parameter names {meta.get('parameters')} do not match "
                             f"the architecture's {names}")
    state = {}
    for name, p in model.named_parameters():
        a = data.get(f"param:{name}")
        if a is None:
            raise ModelFileError(f"{path}: parameter {name!r} is missing")
        if a.shape != p.data.shape or a.dtype != p.data.dtype:
            raise ModelFileError(f"{path}: parameter {name!r} has shape {a.shape} and dtype "
                                 f"{a.dtype}; the architecture needs {p.data.shape} {p.data.dtype}")
        state[name] = a
    buffer_names = [n for n, _ in model.named_buffers()]
    if buffer_names != meta.get("buffers"):
        raise ModelFileError(f"{path}: buffer names {meta.get('buffers')} do not match the "
                             f"architecture's {buffer_names}")
    expected = {f"param:{n}" for n in names} | {f"buffer:{n}" for n in buffer_names}
    unexpected = sorted(k for k in data if k not in expected and not k.startswith("optim:"))
    missing = sorted(k for k in expected if k not in data)
    if unexpected or missing:
        raise ModelFileError(f"{path}: entries do not match the architecture: unexpected "
                             f"{unexpected}, missing {missing}")
    for name in buffer_names:
        state[name] = data[f"buffer:{name}"]
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: {exc}") from None

    loss = meta.get("loss")
    if hasattr(model, "loss"):
        if isinstance(loss, dict):
            from fastnn import losses
            cls = getattr(losses, str(loss.get("class")), None)
            loss = cls() if isinstance(cls, type) else None
        model.loss = loss
    if isinstance(meta.get("metadata"), dict):
        model.metadata = meta["metadata"]
    opt_meta = meta.get("optimizer")
    if opt_meta is not None and with_optimizer:
        optimizer = _rebuild_optimizer(path, model, opt_meta, data)
        model.optimizer = optimizer
    return model


def _rebuild_optimizer(path, model, opt_meta, data):
    from fastnn import optim
    from fastnn.optim import Optimizer

    cls = getattr(optim, str(opt_meta.get("class")), None)
    if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
        raise ModelFileError(f"{path}: unknown optimizer class {opt_meta.get('class')!r}")
    params = model.parameters()
    groups = opt_meta.get("groups")
    try:
        param_groups = [{"params": [params[i] for i in g]} for g in groups]
        state = _decode(opt_meta["state"], data)
        optimizer = cls(param_groups)
        optimizer.load_state_dict(state)
    except ModelFileError:
        raise
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: cannot restore the {cls.__name__} state: {exc}") from None
    return optimizer
