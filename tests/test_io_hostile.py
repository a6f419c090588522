"""Hostile and damaged model files: every failure of ``fastnn.load`` is a ``ModelFileError``,
and ``load`` never allocates more than the file justifies. Killed writers leave no litter that
accumulates, and a legal 250-byte file name can be saved.

The files are built here (hand-made zip archives, edited .npy headers and descriptions) and
loaded in a child process under an address-space limit (``RLIMIT_AS``: the child's size at
start + 256 MiB) with tracemalloc on: an attempt to allocate what the file declares but does
not hold fails there with MemoryError (a foreign exception, so the test fails), and the peak
of traced memory of each load is compared with the budget (2 x the array bytes of the
original model + 4 MiB).
"""
import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
import warnings
import zipfile

import numpy as np
import pytest

import fastnn
from fastnn import optim
from fastnn.io import MAX_ARRAYS, ModelFileError, _digest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_AS, SIGKILL, flock")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
BUDGET_SLACK = 4 << 20  # bytes of traced memory a load may use beyond 2 x the arrays


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = "1"
    return env


def _model():
    """A small fitted model with an Adam state and a dropout counter."""
    model = fastnn.Sequential(fastnn.Dense(6, 8, "tanh", seed=0), fastnn.Dropout(0.2, seed=1),
                              fastnn.Dense(8, 3, seed=2))
    opt = optim.Adam(model.parameters(), lr=1e-2)
    X = np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32)
    model.fit(X, np.arange(16) % 3, loss="cross_entropy", optimizer=opt, epochs=1, verbose=0)
    return model, opt


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("orig") / "m.npz")
    model, opt = _model()
    fastnn.save(model, path, optimizer=opt)
    return path


def _array_bytes(path):
    with np.load(path) as z:
        return sum(z[k].nbytes for k in z.files if k != "__fastnn__")


# --- building hostile files -------------------------------------------------------------------
def _members(path):
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def _write(path, members, compression=zipfile.ZIP_STORED):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w", compression) as z:
            for name, data in members:
                z.writestr(name, data)
    return path


def _npy(a, allow_pickle=False):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(a), allow_pickle=allow_pickle)
    return buf.getvalue()


def _npy_header(shape, descr, fortran=False, version=(1, 0)):
    buf = io.BytesIO()
    d = {"descr": descr, "fortran_order": fortran, "shape": shape}
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(buf, d)
    else:
        np.lib.format.write_array_header_2_0(buf, d)
    return buf.getvalue()


def _meta(members):
    data = dict(members)["__fastnn__.npy"]
    return json.loads(np.load(io.BytesIO(data)).tobytes())


def _replace(members, name, data):
    return [(n, data if n == name else d) for n, d in members]


def _with_meta(members, meta=None, raw=None):
    raw = json.dumps(meta).encode() if raw is None else raw
    return _replace(members, "__fastnn__.npy", _npy(np.frombuffer(raw, np.uint8)))


def _edited(members, edit_meta=None, arrays=None, fix_checksums=True):
    """Members with the description edited and arrays replaced (checksums recomputed)."""
    meta = _meta(members)
    if edit_meta:
        edit_meta(meta)
    for key, a in (arrays or {}).items():
        members = _replace(members, f"{key}.npy", _npy(a))
    if fix_checksums:
        for key, a in (arrays or {}).items():
            meta["checksums"][key] = _digest(np.asarray(a))
    return _with_meta(members, meta)


def _patch_central(path, name, offset, fmt_value):
    """Overwrite bytes at ``offset`` in the central directory entry of member ``name``."""
    raw = bytearray(open(path, "rb").read())
    at = raw.find(b"PK\x01\x02")
    while True:
        n = int.from_bytes(raw[at + 28:at + 30], "little")
        if raw[at + 46:at + 46 + n] == name.encode():
            break
        at = raw.find(b"PK\x01\x02", at + 4)
        assert at > 0, name
    raw[at + offset:at + offset + len(fmt_value)] = fmt_value
    open(path, "wb").write(bytes(raw))
    return path


def _deflated_zeros_member(z, name, header, n_bytes):
    """A deflated member: ``header`` then ``n_bytes`` zero bytes, written in chunks."""
    with z.open(zipfile.ZipInfo(name), "w", force_zip64=True) as f:
        f.write(header)
        chunk = bytes(1 << 20)
        left = n_bytes
        while left:
            f.write(chunk[:min(left, len(chunk))])
            left -= min(left, len(chunk))


def _set_dense(layer, n_in=None, n_out=None):
    def edit(meta):
        cfg = meta["architecture"]["layers"][layer]
        if n_in is not None:
            cfg["in_features"] = n_in
        if n_out is not None:
            cfg["out_features"] = n_out
    return edit


def _cases(orig, d):
    """(label, path, message fragment) of hostile files built from the file ``orig``."""
    m = _members(orig)
    p = lambda name: os.path.join(d, name)  # noqa: E731
    w = _write
    cases = []

    def add(label, path, fragment):
        cases.append((label, path, fragment))

    weight = "param:0.weight.npy"
    wdata = dict(m)[weight]
    hdr_len = len(_npy_header((6, 8), "<f4"))
    # --- .npy headers declaring more than they hold
    add("npy/1e12-elements", w(p("a1"), _replace(m, weight, _npy_header((10**6, 10**6), "<f4")
                                                 + wdata[hdr_len:])), "need 4000000000000 bytes")
    add("npy/negative-shape", w(p("a2"), _replace(m, weight, _npy_header((-6, 8), "<f4")
                                                  + wdata[hdr_len:])), "array 'param:0.weight'")
    add("npy/version-3", w(p("a3"), _replace(m, weight, b"\x93NUMPY\x03\x00" + wdata[8:])),
        "array 'param:0.weight'")
    add("npy/object", w(p("a4"), _replace(m, weight, _npy(np.array([{}] * 48, object)
                                                          .reshape(6, 8), allow_pickle=True))),
        "not a plain bool, integer or float")
    add("npy/structured", w(p("a5"), _replace(m, weight, _npy(np.zeros(6, "f4,i4")))),
        "not a plain bool")
    add("npy/subarray-1e8", w(p("a6"), _replace(
        m, weight, _npy_header((1,), [("a", "<f8", (10**8,))]) + bytes(16))), "not a plain")
    add("npy/complex", w(p("a7"), _edited(m, arrays={"param:0.weight": np.zeros((6, 8),
                                                                               np.complex64)})),
        "not a plain")
    add("npy/unicode", w(p("a8"), _replace(m, weight, _npy(np.array(["abc"] * 4)))),
        "not a plain")
    add("npy/big-endian-weight", w(p("a9"), _edited(m, arrays={
        "param:0.weight": np.zeros((6, 8), ">f4")})), "dtype >f4; the architecture needs")
    add("npy/float64-weight", w(p("a10"), _edited(m, arrays={
        "param:0.weight": np.zeros((6, 8))})), "dtype float64; the architecture needs")
    add("npy/header-garbage", w(p("a11"), _replace(m, weight, wdata[:10] + b"{'descr': [[[["
                                                   + wdata[24:])), "array 'param:0.weight'")
    add("npy/not-npy", w(p("a12"), _replace(m, weight, b"hello" * 40)), "param:0.weight")
    # --- descriptions declaring huge layers: refused before anything is built
    add("json/2e7-units", w(p("b1"), _edited(m, _set_dense(0, n_out=2 * 10**7))),
        "the architecture needs (6, 20000000)")
    add("json/1e12-units", w(p("b2"), _edited(m, _set_dense(2, n_in=10**12))),
        "the architecture needs (1000000000000, 3)")
    huge = _edited(m, _set_dense(0, n_out=2 * 10**7))
    add("json/huge-and-npy-huge", w(p("b3"), _replace(huge, weight, _npy_header(
        (6, 2 * 10**7), "<f4") + wdata[hdr_len:])), "need 480000000 bytes")
    add("json/bad-in-features", w(p("b4"), _edited(m, _set_dense(0, n_in="6"))),
        "cannot rebuild the architecture")
    add("json/type-list", w(p("b5"), _edited(m, lambda mt: mt["architecture"]["layers"][0]
                                               .__setitem__("type", ["Dense"]))),
        "unknown layer type")
    add("json/layers-not-list", w(p("b6"), _edited(m, lambda mt: mt["architecture"]
                                                    .__setitem__("layers", {"0": 1}))),
        "cannot rebuild the architecture")
    add("json/not-utf8", w(p("c1"), _with_meta(m, raw=b'{"format": "\xff\xfe"}')), "not UTF-8")
    add("json/invalid", w(p("c2"), _with_meta(m, raw=b'{"format": ')), "not valid JSON")
    add("json/array", w(p("c3"), _with_meta(m, raw=b"[1, 2]")), "not an object")
    add("json/number", w(p("c4"), _with_meta(m, raw=b"5")), "not an object")
    add("json/deep-30000", w(p("c5"), _with_meta(m, raw=b"[" * 30000 + b"]" * 30000)),
        "nested more than 64 levels")
    deep = json.dumps(_meta(m)).replace('"layers": [', '"layers": [' + "[" * 3000, 1)
    deep = deep.replace("]}, \"parameters\"", "]" * 3000 + "]}, \"parameters\"", 1)
    add("json/deep-in-architecture", w(p("c6"), _with_meta(m, raw=deep.encode())),
        "nested more than 64 levels")
    add("json/too-big", w(p("c7"), _edited(m, lambda mt: mt.__setitem__("x", "a" * 10**6))),
        "at most")
    add("json/10000-digit-int", w(p("c8"), _with_meta(
        m, raw=json.dumps(_meta(m)).replace('"version": 1', '"version": 1' + "0" * 10000)
        .encode())), "not valid JSON")
    add("json/version-0", w(p("c9"), _edited(m, lambda mt: mt.__setitem__("version", 0))),
        "unknown format version")
    add("json/version-true", w(p("c10"), _edited(m, lambda mt: mt.__setitem__("version", True))),
        "format version")
    add("json/checksums-list", w(p("c11"), _edited(m, lambda mt: mt.__setitem__("checksums",
                                                                                [1]))),
        "'checksums' must map")
    add("json/parameters-dup", w(p("c12"), _edited(m, lambda mt: mt["parameters"]
                                                    .append("0.weight"))), "distinct names")
    add("json/meta-float", w(p("c13"), _replace(m, "__fastnn__.npy", _npy(np.zeros(4)))),
        "1-D uint8 array")
    add("json/no-meta", w(p("c14"), [x for x in m if x[0] != "__fastnn__.npy"]),
        "no '__fastnn__' entry")
    # --- optimizer and loss state
    add("optim/scalar-void-1e9", w(p("d1"), _edited(m, lambda mt: mt["optimizer"].__setitem__(
        "state", {"__scalar__": "V1000000000", "value": 1}))), "unexpected scalar")
    add("optim/scalar-subarray", w(p("d2"), _edited(m, lambda mt: mt["optimizer"].__setitem__(
        "state", {"__scalar__": "(1000000000,)f8", "value": 1}))), "unexpected scalar")
    add("optim/scalar-overflow", w(p("d3"), _edited(m, lambda mt: mt["optimizer"].__setitem__(
        "state", {"__scalar__": "<i1", "value": 10**6}))), "does not fit")
    add("optim/group-negative", w(p("d4"), _edited(m, lambda mt: mt["optimizer"].__setitem__(
        "groups", [[-1, 0, 1, 2]]))), "out of range")
    add("optim/group-99", w(p("d5"), _edited(m, lambda mt: mt["optimizer"].__setitem__(
        "groups", [[99]]))), "out of range")
    add("optim/bad-dict", w(p("d6"), _edited(m, lambda mt: mt["optimizer"].__setitem__(
        "state", {"__dict__": [[1, 2, 3]]}))), "unexpected dict entry")
    add("optim/class-os", w(p("d7"), _edited(m, lambda mt: mt["optimizer"].__setitem__(
        "class", "os"))), "unknown optimizer class")
    # --- member lists that do not match the description: refused before reading data
    add("members/extra", w(p("e1"), m + [("junk.npy", _npy(np.zeros(3)))]),
        "do not match its description")
    add("members/missing", w(p("e2"), [x for x in m if x[0] != "param:2.bias.npy"]),
        "do not match its description")
    add("members/duplicate", w(p("e3"), m + [("param:0.bias.npy", _npy(np.zeros(8, "f4")))]),
        "appears twice")
    add("members/not-npy", w(p("e4"), m + [("readme.txt", b"hi")]), "not an .npy array")
    add("members/swap-shapes", w(p("e5"), _replace(_replace(m, "param:0.bias.npy",
                                                            dict(m)["param:2.bias.npy"]),
                                                   "param:2.bias.npy",
                                                   dict(m)["param:0.bias.npy"])),
        "parameter '0.bias' has shape (3,)")
    add("members/swap-same-shape", w(p("e6"), _replace(_replace(m, "optim:0.npy",
                                                                dict(m)["optim:1.npy"]),
                                                       "optim:1.npy", dict(m)["optim:0.npy"])),
        "checksum mismatch for 'optim:0'")
    add("members/weight-edited", w(p("e7"), _edited(m, arrays={
        "param:0.weight": np.ones((6, 8), np.float32)}, fix_checksums=False)),
        "checksum mismatch for 'param:0.weight'")
    many = [(f"x{i}.npy", b"") for i in range(MAX_ARRAYS + 5)]
    add("members/too-many", w(p("e8"), many), "zip entries")
    # --- compressed members and zip bombs
    path = p("f1")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in m:
            z.writestr(name, data)
        _deflated_zeros_member(z, "junk.npy", _npy_header((200 << 20,), "|u1"), 200 << 20)
    add("bomb/200MB-extra-member", path, "do not match its description")
    path = p("f2")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in m:
            if name != weight:
                z.writestr(name, data)
        _deflated_zeros_member(z, weight, _npy_header((6, 8 << 20), "<f4"), 192 << 20)
    add("bomb/192MB-weight", path, "parameter '0.weight' has shape (6, 8388608)")
    # deflated weight whose stream is 50 MB but whose directory says the right size
    path = p("f3")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in m:
            if name != weight:
                z.writestr(name, data)
        _deflated_zeros_member(z, weight, wdata[:hdr_len], 50 << 20)
    _patch_central(path, weight, 24, len(wdata).to_bytes(4, "little"))
    add("bomb/stream-longer-than-declared", path, "param:0.weight")
    path = w(p("f4"), m, zipfile.ZIP_DEFLATED)
    add("bomb/declared-beyond-deflate",
        _patch_central(path, weight, 24, (10**9).to_bytes(4, "little")),
        "more than deflate can produce")
    path = w(p("f5"), m)
    add("zip/stored-size-mismatch", _patch_central(path, weight, 24, (10**9).to_bytes(4,
                                                                                       "little")),
        "stored member declares")
    for method in (12, 14, 93, 99):
        path = w(p(f"g{method}"), m)
        add(f"zip/method-{method}", _patch_central(path, weight, 10,
                                                   method.to_bytes(2, "little")),
            f"compression method {method}")
    path = w(p("g1"), m)
    add("zip/encrypted", _patch_central(path, weight, 8, b"\x01\x00"), "encrypted")
    path = w(p("g2"), m)
    add("zip/version-needed-99", _patch_central(path, weight, 6, b"\xff\x00"),
        "not a readable fastnn model file")
    path = w(p("g3"), m)
    add("zip/offset-outside", _patch_central(path, weight, 42, b"\xff\xff\xff\x7f"),
        "declared outside the file")
    path = w(p("g4"), m)
    add("zip/name-not-utf8", _patch_central(path, weight, 8, b"\x00\x08")
        and _patch_central(path, weight, 46, b"\xff"), "not a readable fastnn model file")
    raw = open(orig, "rb").read()
    eocd = raw.rfind(b"PK\x05\x06")
    open(p("g5"), "wb").write(raw[:eocd + 12] + (2**31).to_bytes(4, "little") + raw[eocd + 16:])
    add("zip/cd-size-2GB", p("g5"), "zip directory of 2147483648 bytes")
    open(p("g6"), "wb").write(b"")
    add("zip/empty", p("g6"), "not a readable fastnn model file")
    open(p("g7"), "wb").write(b"PK\x05\x06" + bytes(18))
    add("zip/only-end-record", p("g7"), "no '__fastnn__' entry")
    os.mkfifo(p("g8"))
    add("path/fifo", p("g8"), "not a regular file")
    return cases


_CHILD = r"""
import json, os, resource, sys, tracemalloc, traceback
import numpy as np
import fastnn

spec = json.load(open(sys.argv[1]))
with open("/proc/self/statm") as f:
    vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20), resource.RLIM_INFINITY))
ref = fastnn.load(spec["original"])
ref_params = [p.data.copy() for p in ref.parameters()]
work = os.path.join(os.path.dirname(sys.argv[1]), "case.npz")


def cases():
    for label, path in spec.get("files", []):
        yield label, path
    if "stride" in spec:
        raw = open(spec["original"], "rb").read()
        rng = np.random.default_rng(spec["seed"])
        positions = range(0, len(raw), spec["stride"])
        for i in positions:
            for v in spec["xor"]:
                b = bytearray(raw)
                b[i] ^= v
                yield f"flip {i} ^ {v}", bytes(b)
        for i in range(0, len(raw), spec["cut_stride"]):
            yield f"cut {i}", raw[:i]
        for _ in range(spec["random"]):  # several random bytes at once
            b = bytearray(raw)
            for i in rng.integers(0, len(raw), int(rng.integers(2, 8))):
                b[i] = int(rng.integers(0, 256))
            yield "random bytes", bytes(b)


trace = spec.get("trace", True)
if trace:
    tracemalloc.start()
out = {"cases": {}, "loaded": 0, "refused": 0, "foreign": [], "wrong": [], "peak": 0,
       "worst": None}
for label, what in cases():
    if isinstance(what, bytes):
        with open(work, "wb") as f:
            f.write(what)
        path = work
    else:
        path = what
    if trace:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
    t0 = __import__("time").perf_counter()
    result = {}
    try:
        model = fastnn.load(path)
    except fastnn.ModelFileError as exc:
        out["refused"] += 1
        result = {"outcome": "refused", "message": str(exc)}
    except BaseException as exc:
        out["foreign"].append([label, repr(exc)[:300], traceback.format_exc()[-1500:]])
        result = {"outcome": "foreign", "message": repr(exc)}
    else:
        out["loaded"] += 1
        result = {"outcome": "loaded"}
        if not all(np.array_equal(a, p.data) for a, p in zip(ref_params, model.parameters())):
            out["wrong"].append(label)
        del model
    peak = tracemalloc.get_traced_memory()[1] - base if trace else 0
    result["peak"] = peak
    result["seconds"] = __import__("time").perf_counter() - t0
    if peak > out["peak"]:
        out["peak"], out["worst"] = peak, label
    if not isinstance(what, bytes):
        out["cases"][label] = result
out["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out["n"] = out["loaded"] + out["refused"] + len(out["foreign"])
print(json.dumps(out))
"""


def _run_child(spec, tmp_path, timeout=300):
    spec_path = str(tmp_path / "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    proc = subprocess.run([sys.executable, "-c", _CHILD, spec_path], capture_output=True,
                          env=_env(), cwd=ROOT, timeout=timeout)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return json.loads(proc.stdout.decode().splitlines()[-1])


def test_hostile_files(original, tmp_path):
    budget = 2 * _array_bytes(original) + BUDGET_SLACK
    cases = _cases(original, str(tmp_path))
    out = _run_child({"original": original, "files": [[c[0], c[1]] for c in cases]}, tmp_path)
    assert not out["foreign"], out["foreign"]
    for label, _, fragment in cases:
        r = out["cases"][label]
        assert r["outcome"] == "refused", (label, r)
        assert fragment in r["message"], (label, r["message"])
        assert r["peak"] <= budget, (label, r["peak"], budget)
        assert r["seconds"] < 10, (label, r["seconds"])


def _fuzz(original, tmp_path, **spec):
    out = _run_child({"original": original, "seed": 0, **spec}, tmp_path, timeout=1200)
    assert not out["foreign"], out["foreign"][:5]
    assert not out["wrong"], out["wrong"][:5]  # whatever loads holds the original weights
    assert out["peak"] <= 2 * _array_bytes(original) + BUDGET_SLACK, out
    assert out["refused"] > 0
    return out


def test_fuzz_quick(original, tmp_path):
    """Byte flips across the whole file (every 29th byte: local headers, .npy headers, data,
    description, central directory, end record), truncations every 37 bytes, random damage;
    the traced peak of every load is within the budget."""
    _fuzz(original, tmp_path, stride=29, xor=[0xFF], cut_stride=37, random=60)


@pytest.mark.slow
def test_fuzz_dense(original, tmp_path):
    """Every third byte flipped, a truncation every 5 bytes, 400 random multi-byte damages,
    under the address-space ceiling (no tracing, for speed)."""
    out = _fuzz(original, tmp_path, stride=3, xor=[0xFF], cut_stride=5, random=400,
                trace=False)
    assert out["n"] > 3000


# --- legitimate files still load ----------------------------------------------------------------
def test_fortran_order_and_deflated_members_load(tmp_path):
    model, opt = _model()
    path = str(tmp_path / "m.npz")
    fastnn.save(model, path, optimizer=opt)
    m = _members(path)
    w = model[0].weight.data
    fortran = _npy(np.asfortranarray(w))
    assert b"'fortran_order': True" in fortran
    _write(path, _replace(m, "param:0.weight.npy", fortran), zipfile.ZIP_DEFLATED)
    loaded = fastnn.load(path)
    np.testing.assert_array_equal(loaded[0].weight.data, w)
    assert isinstance(loaded.optimizer, optim.Adam)


class _Scale(fastnn.layers.Module):
    """A layer whose parameter size comes from its config and which does not declare its
    parameter shapes: load builds it first and checks after."""

    def __init__(self, n_features):
        super().__init__()
        self.n_features = n_features
        self.scale = fastnn.parameter.Parameter(np.ones(n_features, np.float32), name="scale")
        self._parameters["scale"] = self.scale

    def forward(self, x):
        return x * self.scale.data

    def get_config(self):
        return {"type": "_Scale", "n_features": self.n_features}


class _WideDense(fastnn.Dense):
    """A Dense subclass defined outside fastnn with an extra parameter: Dense's declared shapes
    must not be trusted for it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.extra = fastnn.parameter.Parameter(np.zeros(2, self.weight.data.dtype),
                                                name="extra")
        self._parameters["extra"] = self.extra


def test_modules_without_declared_shapes_round_trip(tmp_path):
    model = fastnn.Sequential(fastnn.Dense(3, 4, seed=0), _Scale(4), _WideDense(4, 2, seed=1))
    model[1].scale.data[:] = [1, 2, 3, 4]
    model[2].extra.data[:] = [5, 6]
    fastnn.save(model, tmp_path / "m.npz")
    loaded = fastnn.load(tmp_path / "m.npz")
    for a, b in zip(model.parameters(), loaded.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    # and their configs are still checked against the stored arrays (after building)
    members = _members(tmp_path / "m.npz")
    _write(tmp_path / "bad.npz", _edited(members, lambda mt: mt["architecture"]["layers"][1]
                                         .__setitem__("n_features", 5)))
    with pytest.raises(ModelFileError, match=r"parameter '1.scale' has shape \(4,\)"):
        fastnn.load(tmp_path / "bad.npz")


def test_declared_shapes_match_built_modules():
    from fastnn.module import config_parameter_shapes
    model, _ = _model()
    nested = fastnn.Sequential(
        fastnn.Residual(fastnn.Sequential(fastnn.Dense(4, 4), fastnn.ReLU())),
        fastnn.Parallel(fastnn.Dense(4, 2, bias=False), fastnn.Dense(4, 3), merge="concat"),
        fastnn.Softmax(), fastnn.Sparsemax())
    for m in (model, nested):
        assert config_parameter_shapes(m.get_config()) == \
            {n: p.data.shape for n, p in m.named_parameters()}


# --- memory budget of a valid load ----------------------------------------------------------
_BUDGET_CHILD = r"""
import json, sys, tracemalloc
import fastnn
fastnn.load(sys.argv[2])  # warm up: imports, first-call caches
def status(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field + ":"))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak resident size (VmHWM) to the current one
before = status("VmRSS")
assert status("VmHWM") <= before + (1 << 20)
tracemalloc.start()
model = fastnn.load(sys.argv[1])
traced = tracemalloc.get_traced_memory()[1]
print(json.dumps({"rss_peak_delta": status("VmHWM") - before, "traced_peak": traced}))
"""


@pytest.mark.parametrize("with_optimizer", [False, True], ids=["model", "model+adam"])
def test_load_peak_memory_is_within_budget(tmp_path, with_optimizer):
    """A 16 MB model (48 MB of arrays with its Adam state): the peak resident memory of load
    stays within 2 x the array bytes + 4 MiB. The child runs with a fixed malloc mmap
    threshold (MALLOC_MMAP_THRESHOLD_) so that the figure is the memory load touches, not what
    glibc keeps of freed blocks after raising its threshold."""
    model = fastnn.Sequential(fastnn.Dense(1000, 4000, seed=0))
    opt = optim.Adam(model.parameters())
    X = np.ones((2, 1000), np.float32)
    model.fit(X, np.zeros((2, 4000), np.float32), loss="squared", optimizer=opt, epochs=1,
              verbose=0)
    big, small = str(tmp_path / "big.npz"), str(tmp_path / "small.npz")
    fastnn.save(model, big, optimizer=opt if with_optimizer else None)
    fastnn.save(fastnn.Sequential(fastnn.Dense(2, 2)), small)
    env = dict(_env(), MALLOC_MMAP_THRESHOLD_=str(1 << 20))
    proc = subprocess.run([sys.executable, "-c", _BUDGET_CHILD, big, small], env=env,
                          cwd=ROOT, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    out = json.loads(proc.stdout.decode().splitlines()[-1])
    budget = 2 * _array_bytes(big) + BUDGET_SLACK
    print(f"arrays {_array_bytes(big) / 2**20:.1f} MiB, {out}")
    assert out["rss_peak_delta"] <= budget, (out, budget)
    assert out["traced_peak"] <= budget, (out, budget)


# --- writing: names, symlinks, killed writers -----------------------------------------------
def test_name_max_target(tmp_path):
    model, _ = _model()
    for name in ("m" * 250, "m" * 251 + ".npz", "é" * 125 + ".npz"):  # 255 bytes at most
        assert len(os.fsencode(name)) <= 255
        fastnn.save(model, tmp_path / name)
        fastnn.load(tmp_path / name)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_symlinks(tmp_path):
    model, _ = _model()
    real = tmp_path / "real.npz"
    fastnn.save(fastnn.Sequential(fastnn.Dense(2, 2)), real)
    before = real.read_bytes()
    os.chmod(real, 0o640)
    link = tmp_path / "link.npz"
    link.symlink_to(real)
    fastnn.save(model, link)  # replaces the link itself: the destination is not written
    assert not link.is_symlink() and real.read_bytes() == before
    fastnn.load(link)
    fastnn.save(model, real)  # a regular target keeps its permissions
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o640
    # something named like a temporary but not one of ours is left alone: a link, a FIFO
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / ".x.00000000.fastnn.tmp").symlink_to(victim)
    os.mkfifo(tmp_path / ".y.00000000.fastnn.tmp")
    fastnn.save(model, tmp_path / "m.npz")
    assert victim.read_bytes() == b"keep"
    assert os.path.islink(tmp_path / ".x.00000000.fastnn.tmp")
    assert os.path.exists(tmp_path / ".y.00000000.fastnn.tmp")


_HOLDER = r"""
import os, sys, time
from fastnn.io import _create_temporary
fd, tmp = _create_temporary(sys.argv[1], "m.npz")
os.write(fd, b"half a model")
print(tmp, flush=True)
time.sleep(600)
"""


def test_live_writer_temporary_survives_and_dead_one_is_removed(tmp_path):
    """A temporary whose writer is alive (its flock held) is never removed; once the writer
    is killed, the next save into the directory removes it."""
    model, _ = _model()
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)],
                            stdout=subprocess.PIPE, env=_env(), cwd=ROOT)
    try:
        tmp = proc.stdout.readline().decode().strip()
        assert os.path.basename(tmp).endswith(".fastnn.tmp") and os.path.exists(tmp)
        fastnn.save(model, tmp_path / "m.npz")
        fastnn.save(model, tmp_path / "other.npz")
        assert os.path.exists(tmp)  # its writer is alive
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    fastnn.save(model, tmp_path / "other.npz")
    assert not os.path.exists(tmp)
    assert sorted(os.listdir(tmp_path)) == ["m.npz", "other.npz"]


_WRITER = r"""
import sys
import numpy as np
import fastnn
from fastnn import Dense, Sequential
path, mode = sys.argv[1], sys.argv[2]
model = Sequential(Dense(1000, 1500, seed=1), Dense(1500, 1000, seed=2))  # ~12 MB
if mode == "save":
    print("ready", flush=True)
    k = 0
    while True:
        model[0].bias.data[0] = k
        fastnn.save(model, path)
        k += 1
else:  # checkpoints under a new name every epoch
    import os
    from fastnn.callbacks import LambdaCallback, ModelCheckpoint
    X = np.random.default_rng(0).standard_normal((16, 1000)).astype(np.float32)
    y = np.zeros((16, 1000), np.float32)
    template = path.replace("m.npz", "m-{epoch}.npz")
    drop = LambdaCallback(on_epoch_end=lambda e, logs: os.unlink(template.format(epoch=e + 1)))
    print("ready", flush=True)
    model.fit(X, y, loss="squared", optimizer="sgd", lr=1e-4, epochs=10**6, batch_size=16,
              verbose=0, callbacks=[ModelCheckpoint(template), drop])  # keeps the disk small
"""


@pytest.mark.parametrize("mode", ["save", "checkpoint"])
def test_killed_writers_leave_no_accumulating_litter(tmp_path, mode, wait_for_write):
    """SIGKILL a writer (fastnn.save in a loop, or ModelCheckpoint under a new name every
    epoch) again and again until at least two kills have landed mid-write: after every kill
    at most one temporary (the last killed writer's) is present, and the next save removes
    it. Odd kills come at random moments; even ones as soon as the writer's own temporary
    appears (a write in progress, however fast the disk)."""
    path = str(tmp_path / "m.npz")
    rng = np.random.default_rng(1)
    caught = kills = 0
    while kills < 3 or (caught < 2 and kills < 15):
        kills += 1
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, path, mode],
                                stdout=subprocess.PIPE, env=_env(), cwd=ROOT)
        try:
            old = {f for f in os.listdir(tmp_path) if f.endswith(".tmp")}
            assert proc.stdout.readline().strip() == b"ready"
            if kills % 2:
                time.sleep(0.2 + float(rng.uniform(0.0, 0.3)))
            else:
                wait_for_write(tmp_path, proc, old)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        temporaries = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
        assert len(temporaries) <= 1, temporaries
        caught += len(temporaries)
    assert caught >= 2, f"only {caught} of {kills} kills interrupted a write"
    fastnn.save(fastnn.Sequential(fastnn.Dense(2, 2)), tmp_path / "last.npz")
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")], os.listdir(tmp_path)
