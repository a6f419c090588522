"""Saving and loading: bit-exact round trips, continued training, atomic writes, validation."""
import json
import os

import numpy as np
import pytest

import fastnn
from fastnn.io import ModelFileError, _digest, load, save
from fastnn.layers import Dense, Dropout, Sparsemax, Tanh
from fastnn.model import Parallel, Residual, Sequential


def make_model(dtype=np.float32):
    return Sequential(
        Dense(6, 8, "relu", seed=0), Dropout(0.3, seed=5, mode="standard"),
        Residual(Sequential(Dense(8, 8, "tanh", seed=1), Tanh())),
        Parallel(Dense(8, 3, seed=2), Dense(8, 2, "sigmoid", bias=False, seed=3)),
        Dense(5, 4, seed=4), dtype=dtype)


def train_steps(model, opt, X, y, n):
    from fastnn import losses
    loss = losses.CrossEntropyLoss()
    out = []
    for _ in range(n):
        model.zero_grad()
        z = model.forward(X)
        value, g = loss.loss_and_grad(z, y)
        model.backward(np.array(g), need_input_grad=False, inplace=True)
        opt.step()
        out.append(value)
    return out


def test_round_trip_is_bit_exact(tmp_path, dtype, rng):
    model = make_model(dtype)
    for p in model.parameters():  # non-trivial values everywhere
        p.data[...] = rng.standard_normal(p.data.shape).astype(dtype)
    path = tmp_path / "model.npz"
    save(model, path)
    loaded = load(path)
    assert type(loaded) is Sequential and loaded.dtype == dtype
    assert repr(loaded) == repr(model)
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), loaded.named_parameters()):
        assert n1 == n2
        np.testing.assert_array_equal(p1.data, p2.data)
        assert p2.data.dtype == dtype
    X = rng.standard_normal((5, 6)).astype(dtype)
    np.testing.assert_array_equal(model.predict(X), loaded.predict(X))
    # a plain npz: readable without pickle
    with np.load(path, allow_pickle=False) as npz:
        assert "param:0.weight" in npz.files and "__fastnn__" in npz.files


def test_continued_training_is_identical(tmp_path, rng):
    from fastnn import optim
    model = make_model()
    opt = optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    X = rng.standard_normal((16, 6)).astype(np.float32)
    y = rng.integers(0, 4, 16)
    train_steps(model, opt, X, y, 3)
    save(model, tmp_path / "ckpt.npz", optimizer=opt)
    loaded = load(tmp_path / "ckpt.npz")
    assert isinstance(loaded.optimizer, optim.Adam)
    assert loaded.optimizer.param_groups[0]["lr"] == 1e-2
    assert loaded.optimizer.param_groups[0]["weight_decay"] == 1e-3
    a = train_steps(model, opt, X, y, 4)
    b = train_steps(loaded, loaded.optimizer, X, y, 4)
    assert a == b  # same losses, bit for bit (dropout masks continue too)
    for p1, p2 in zip(model.parameters(), loaded.parameters()):
        np.testing.assert_array_equal(p1.data, p2.data)


def test_fitted_model_optimizer_and_loss(tmp_path, rng):
    from fastnn import losses, optim
    model = Sequential(Dense(3, 4, "tanh", seed=0), Dense(4, 2, seed=1))
    model.optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    model.loss = losses.CrossEntropyLoss()
    X = rng.standard_normal((8, 3)).astype(np.float32)
    train_steps(model, model.optimizer, X, rng.integers(0, 2, 8), 2)
    save(model, tmp_path / "plain.npz")
    plain = load(tmp_path / "plain.npz")
    assert plain.optimizer is None and isinstance(plain.loss, losses.CrossEntropyLoss)
    save(model, tmp_path / "m.npz", optimizer=model.optimizer)
    loaded = load(tmp_path / "m.npz")
    assert isinstance(loaded.optimizer, optim.SGD)
    assert loaded.optimizer.param_groups[0]["nesterov"] is True
    assert isinstance(loaded.loss, losses.CrossEntropyLoss)
    st1 = model.optimizer.state_dict()["state"]
    st2 = loaded.optimizer.state_dict()["state"]
    for k in st1:
        for name in st1[k]:
            np.testing.assert_array_equal(st1[k][name], st2[k][name])
    assert load(tmp_path / "m.npz", with_optimizer=False).optimizer is None


def test_write_is_atomic(tmp_path, monkeypatch):
    model = make_model()
    path = tmp_path / "m.npz"
    save(model, path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        save(Sequential(Dense(2, 2)), path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old file survives a failed write
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]  # no temporary left behind
    save(model, path)  # overwriting works and keeps the file's permissions
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def _rewrite(path, edit_meta=None, edit_arrays=None, fix_checksums=True):
    with np.load(path, allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files}
    meta = json.loads(data.pop("__fastnn__").tobytes())
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(data)
    if fix_checksums:
        meta["checksums"] = {k: _digest(v) for k, v in data.items()}
    data["__fastnn__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **data)


def test_truncated_and_corrupt_files(tmp_path):
    path = tmp_path / "m.npz"
    save(make_model(), path)
    raw = path.read_bytes()
    for cut in (10, len(raw) // 2, len(raw) - 30):
        path.write_bytes(raw[:cut])
        with pytest.raises(ModelFileError, match="corrupt or truncated"):
            load(path)
    # flip one byte inside the weights: zip CRC or fastnn's checksum catches it
    k = raw.find(b"param:2.module.0.weight")
    assert k > 0
    bad = bytearray(raw)
    bad[k + 200] ^= 0xFF
    path.write_bytes(bytes(bad))
    with pytest.raises(ModelFileError):
        load(path)
    path.write_bytes(b"not a model at all")
    with pytest.raises(ModelFileError):
        load(path)
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(ModelFileError):
        load(tmp_path / "a.npy")
    np.savez(tmp_path / "b.npz", x=np.zeros(3))
    with pytest.raises(ModelFileError, match="not a file written by fastnn.save"):
        load(tmp_path / "b.npz")
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.npz")


def test_tampered_files(tmp_path):
    path = tmp_path / "m.npz"

    def fresh():
        save(make_model(), path)

    fresh()
    _rewrite(path, edit_arrays=lambda d: d.__setitem__("param:0.bias", d["param:0.bias"] + 1),
             fix_checksums=False)
    with pytest.raises(ModelFileError, match="checksum mismatch for 'param:0.bias'"):
        load(path)
    fresh()
    _rewrite(path, edit_arrays=lambda d: d.__setitem__("param:0.bias", np.zeros(9, np.float32)))
    with pytest.raises(ModelFileError, match=r"parameter '0.bias' has shape \(9,\)"):
        load(path)
    fresh()
    _rewrite(path, edit_arrays=lambda d: d.__setitem__("param:0.bias", np.zeros(8)))
    with pytest.raises(ModelFileError, match="dtype float64"):
        load(path)
    fresh()
    _rewrite(path, edit_meta=lambda m: m["architecture"]["layers"][0].__setitem__("type",
                                                                                 "Conv2d"))
    with pytest.raises(ModelFileError, match="unknown layer type 'Conv2d'"):
        load(path)
    fresh()
    _rewrite(path, edit_meta=lambda m: m["architecture"]["layers"][0].__setitem__(
        "out_features", 9))
    with pytest.raises(ModelFileError):
        load(path)
    fresh()
    _rewrite(path, edit_meta=lambda m: m.__setitem__("version", 99))
    with pytest.raises(ModelFileError, match="newer"):
        load(path)
    fresh()
    _rewrite(path, edit_arrays=lambda d: d.pop("param:4.bias"))
    with pytest.raises(ModelFileError):
        load(path)
    fresh()
    _rewrite(path, edit_arrays=lambda d: d.__setitem__("extra", np.zeros(1)))
    with pytest.raises(ModelFileError):
        load(path)


def test_optimizer_must_belong_to_the_model(tmp_path):
    from fastnn import optim
    model = Sequential(Dense(2, 2))
    other = Sequential(Dense(2, 2))
    with pytest.raises(ValueError, match="not in the model"):
        save(model, tmp_path / "x.npz", optimizer=optim.SGD(other.parameters()))
    assert not os.listdir(tmp_path)


def test_sparsemax_and_custom_module_round_trip(tmp_path, rng):
    model = Sequential(Dense(3, 5, seed=0), Sparsemax(method="sort"), dtype=np.float64)
    save(model, tmp_path / "s.npz")
    loaded = load(tmp_path / "s.npz")
    X = rng.standard_normal((4, 3))
    np.testing.assert_array_equal(model.predict(X), loaded.predict(X))
    assert loaded[1].method == "sort"


def test_public_names():
    for name in ("save", "load", "gradcheck", "Sequential", "Dense", "Dropout", "Residual",
                 "Parallel", "Softmax", "Sparsemax", "ReLU"):
        assert name in fastnn.__all__ and hasattr(fastnn, name)
