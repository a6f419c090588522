"""fastnn.datasets: IDX reader, MNIST loader, loopback download, shipped digits, toy sets."""
import functools
import gzip
import hashlib
import http.server
import os
import struct
import threading

import numpy as np
import pytest

from fastnn import datasets
from fastnn.datasets import ChecksumError, IDXError, read_idx


def _idx_bytes(a: np.ndarray) -> bytes:
    codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D,
             np.float64: 0x0E}
    code = codes[a.dtype.type]
    head = bytes([0, 0, code, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape)
    return head + a.astype(a.dtype.newbyteorder(">")).tobytes()


def _write(path, data: bytes, gz: bool):
    with open(path, "wb") as f:
        f.write(gzip.compress(data) if gz else data)
    return path


# --- IDX reader --------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32,
                                   np.float64])
def test_read_idx_roundtrip(tmp_path, gz, dtype):
    a = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    if dtype == np.uint8:
        a = np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
    p = _write(tmp_path / "a.idx", _idx_bytes(a), gz)
    b = read_idx(p)
    assert b.shape == a.shape and b.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(b, a)
    assert b.flags.writeable


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_read_idx_rejects_truncated(tmp_path, gz):
    data = _idx_bytes(np.arange(100, dtype=np.uint8).reshape(10, 10))
    cut = data[:-7]
    p = tmp_path / "t.idx"
    if gz:
        full = gzip.compress(data)
        p.write_bytes(full[: len(full) // 2])  # the gzip stream itself is cut
    else:
        p.write_bytes(cut)
    with pytest.raises(IDXError, match="truncated"):
        read_idx(p)
    p.write_bytes(data[:6])  # cut inside the header
    with pytest.raises(IDXError, match="header"):
        read_idx(p)
    p.write_bytes(b"\x00\x00")
    with pytest.raises(IDXError, match="truncated"):
        read_idx(p)
    if gz:  # a complete gzip stream around truncated IDX content
        p.write_bytes(gzip.compress(cut))
        with pytest.raises(IDXError, match=r"truncated: .*declares shape \(10, 10\)"):
            read_idx(p)


def test_read_idx_rejects_corrupt(tmp_path):
    data = _idx_bytes(np.arange(4000, dtype=np.uint8).reshape(40, 100) % 251)
    gz = bytearray(gzip.compress(data))
    gz[len(gz) // 2] ^= 0xFF
    gz[len(gz) // 2 + 1] ^= 0xFF
    p = tmp_path / "c.idx.gz"
    p.write_bytes(bytes(gz))
    with pytest.raises(IDXError, match="corrupt|truncated"):
        read_idx(p)
    p.write_bytes(b"\x01\x02\x08\x01" + data[4:])
    with pytest.raises(IDXError, match="not an IDX file"):
        read_idx(p)
    p.write_bytes(b"\x00\x00\x07\x01" + data[4:])
    with pytest.raises(IDXError, match="unknown IDX type"):
        read_idx(p)
    p.write_bytes(data + b"extra")
    with pytest.raises(IDXError, match="corrupt: .* bytes follow"):
        read_idx(p)


def test_read_idx_checksum(tmp_path):
    data = _idx_bytes(np.arange(10, dtype=np.uint8))
    p = _write(tmp_path / "s.idx", data, gz=False)
    good = hashlib.sha256(data).hexdigest()
    np.testing.assert_array_equal(read_idx(p, sha256=good), np.arange(10))
    assert datasets.sha256_file(p) == good
    with pytest.raises(ChecksumError, match="sha256 mismatch .* expected 0000"):
        read_idx(p, sha256="0" * 64)


# --- MNIST directory loading (a tiny fake set) --------------------------------------------------

def _fake_mnist(directory, n_train=20, n_test=10, gz=True):
    rng = np.random.default_rng(0)
    os.makedirs(directory, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    hashes = {}
    for name, a in arrays.items():
        fname = name + (".gz" if gz else "")
        raw = _idx_bytes(a)
        blob = gzip.compress(raw) if gz else raw
        with open(os.path.join(directory, fname), "wb") as f:
            f.write(blob)
        hashes[fname] = hashlib.sha256(blob).hexdigest()
    return arrays, hashes


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_load_mnist_from_directory(tmp_path, monkeypatch, gz):
    arrays, hashes = _fake_mnist(tmp_path / "m", gz=gz)
    # a fake set fails the checksum of the real MNIST files...
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        datasets.load_mnist(tmp_path / "m")
    # ...and loads with verification off, or with its own hashes registered
    Xtr, ytr, Xte, yte = datasets.load_mnist(tmp_path / "m", verify=False)
    assert Xtr.shape == (20, 784) and Xtr.dtype == np.float32 and Xte.shape == (10, 784)
    np.testing.assert_allclose(Xtr, arrays["train-images-idx3-ubyte"].reshape(20, -1) / 255.0,
                               rtol=1e-6)
    np.testing.assert_array_equal(ytr, arrays["train-labels-idx1-ubyte"])
    assert ytr.dtype == np.int64
    for k, v in hashes.items():
        monkeypatch.setitem(datasets.mnist.MNIST_SHA256, k, v)
    Xtr2, *_ = datasets.load_mnist(tmp_path / "m", dtype=np.float64, scale=False,
                                   flatten=False)
    assert Xtr2.shape == (20, 28, 28) and Xtr2.dtype == np.float64 and Xtr2.max() > 1


def test_load_mnist_env_var_and_missing(tmp_path, monkeypatch):
    _fake_mnist(tmp_path / "env")
    monkeypatch.setenv("FASTNN_MNIST_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("FASTNN_DATA_DIR", str(tmp_path / "cache"))
    Xtr, *_ = datasets.load_mnist(verify=False)
    assert Xtr.shape == (20, 784)
    monkeypatch.setenv("FASTNN_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="FASTNN_MNIST_DIR"):
        datasets.load_mnist()
    with pytest.raises(FileNotFoundError, match="no MNIST files in"):
        datasets.load_mnist(tmp_path / "nowhere")


def test_load_mnist_rejects_truncated_real_named_file(tmp_path):
    _fake_mnist(tmp_path / "m", gz=False)
    p = tmp_path / "m" / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(IDXError, match="truncated"):
        datasets.load_mnist(tmp_path / "m", verify=False)


# --- download from a loopback server ------------------------------------------------------------

class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).requests.append(self.path)
        super().do_GET()


@pytest.fixture
def loopback_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = type("H", (_Quiet,), {"requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(handler, directory=str(root)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}/", handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(5)


def test_download_checks_sha256_and_is_atomic(loopback_server, tmp_path):
    root, url, handler = loopback_server
    payload = os.urandom(200_000)
    (root / "blob.bin").write_bytes(payload)
    good = hashlib.sha256(payload).hexdigest()
    cache = tmp_path / "cache"
    out = datasets.download(url + "blob.bin", cache / "blob.bin", sha256=good)
    assert open(out, "rb").read() == payload
    n = len(handler.requests)
    datasets.download(url + "blob.bin", cache / "blob.bin", sha256=good)  # cached: no request
    assert len(handler.requests) == n
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        datasets.download(url + "blob.bin", cache / "bad.bin", sha256="f" * 64)
    assert sorted(os.listdir(cache)) == ["blob.bin"]  # nothing half-written left behind
    with pytest.raises(OSError):
        datasets.download(url + "missing.bin", cache / "missing.bin")
    assert sorted(os.listdir(cache)) == ["blob.bin"]


def test_fetch_mnist_from_loopback(loopback_server, tmp_path, monkeypatch):
    root, url, handler = loopback_server
    arrays, hashes = _fake_mnist(root)
    for k, v in hashes.items():
        monkeypatch.setitem(datasets.mnist.MNIST_SHA256, k, v)
    monkeypatch.delenv("FASTNN_MNIST_DIR", raising=False)
    cache = tmp_path / "cache"
    Xtr, ytr, Xte, yte = datasets.load_mnist(download=True, cache_dir=cache, base_url=url)
    assert Xtr.shape == (20, 784) and yte.shape == (10,)
    assert sorted(os.listdir(cache / "mnist")) == sorted(hashes)
    assert len(handler.requests) == 4
    datasets.load_mnist(download=True, cache_dir=cache, base_url=url)  # served from the cache
    assert len(handler.requests) == 4
    # a tampered server file is refused
    monkeypatch.setitem(datasets.mnist.MNIST_SHA256, "t10k-labels-idx1-ubyte.gz", "0" * 64)
    with pytest.raises(ChecksumError):
        datasets.fetch_mnist(tmp_path / "cache2", base_url=url)


# --- shipped digits and toys -------------------------------------------------------------------

def test_load_digits_shipped():
    path = os.path.join(datasets.DATA_DIR, "digits.csv.gz")
    assert datasets.sha256_file(path) == datasets.DIGITS_SHA256
    assert os.path.getsize(path) < 2_000_000
    assert os.path.exists(os.path.join(datasets.DATA_DIR, "README.md"))
    X, y = datasets.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert y.shape == (1797,) and set(np.unique(y)) == set(range(10))
    assert X.min() == 0 and X.max() == 16
    assert np.bincount(y).min() >= 170
    Xi, _ = datasets.load_digits(images=True, dtype=np.float64)
    assert Xi.shape == (1797, 8, 8) and Xi.dtype == np.float64


def test_threshold_logic_matches_lecture_table():
    X, y = datasets.threshold_logic()
    # Table 3.6: v = -2 + 2 x1 + 4 x2 - x3, y = sgn(v)
    expected_v = [-7, -9, 1, -1, -3, -5, 5, 3]
    w, b = datasets.THRESHOLD_LOGIC_WEIGHTS
    np.testing.assert_array_equal(X @ w + b, expected_v)
    np.testing.assert_array_equal(y, np.sign(expected_v))
    Xb, yb = datasets.threshold_logic(binary=True)
    x1, x2, x3 = Xb.T.astype(bool)
    np.testing.assert_array_equal(yb, (x2 & (x1 | ~x3)).astype(int))


def test_xor_spirals_circles_regression():
    X, y = datasets.make_xor()
    np.testing.assert_array_equal(y, np.logical_xor(X[:, 0], X[:, 1]))
    X, y = datasets.make_xor(100, seed=0)
    np.testing.assert_array_equal(y, (X[:, 0] > 0) ^ (X[:, 1] > 0))
    for make in (datasets.make_spirals, datasets.make_circles):
        X, y = make(201, noise=0.05, seed=1)
        assert X.shape == (201, 2) and X.dtype == np.float32
        assert abs(np.bincount(y)[0] - np.bincount(y)[1]) <= 1
        X2, y2 = make(201, noise=0.05, seed=1)
        np.testing.assert_array_equal(X, X2)
    X, y = datasets.make_circles(400, seed=0)
    r = np.hypot(X[:, 0], X[:, 1])
    assert r[y == 1].max() <= 0.5 + 1e-6 and r[y == 0].min() >= 0.7 - 1e-6
    X, y = datasets.make_spirals(400, seed=0)
    assert np.hypot(X[:, 0], X[:, 1]).max() <= 1.0
    X, y = datasets.make_regression_1d(50, seed=0)
    assert X.shape == (50, 1) and y.shape == (50, 1)
    np.testing.assert_allclose(y[:, 0], np.sin(np.pi * X[:, 0]), rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(X[:, 0]) >= 0)
    X, y = datasets.make_regression_1d(30, function=lambda x: 2 * x, noise=0.0, seed=0)
    np.testing.assert_allclose(y, 2 * X, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown function"):
        datasets.make_regression_1d(function="nope")
