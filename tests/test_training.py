"""fastnn.training: fit / evaluate / predict, continued training, divergence, callbacks in fit."""
import os

import numpy as np
import pytest

from fastnn import datasets, io, training
from fastnn.callbacks import EarlyStopping, HalveLROnIncrease, LambdaCallback, ModelCheckpoint
from fastnn.data import Standardizer, train_test_split
from fastnn.layers import Dense
from fastnn.model import Sequential


def mlp(sizes, activation="relu", seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        act = activation if i < len(sizes) - 2 else None
        layers.append(Dense(a, b, activation=act, seed=int(rng.integers(2 ** 31)), dtype=dtype))
    return Sequential(*layers)


@pytest.fixture(scope="module")
def digits():
    X, y = datasets.load_digits()
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, stratify=True, seed=0)
    s = Standardizer().fit(Xtr)
    return s.transform(Xtr), ytr, s.transform(Xte), yte


@pytest.mark.parametrize("seed", [0, 1])
def test_fit_reaches_97_percent_on_shipped_digits(digits, seed):
    Xtr, ytr, Xte, yte = digits
    model = mlp([64, 128, 10], seed=seed)
    hist = model.fit(Xtr, ytr, loss="cross_entropy", optimizer="adam", epochs=30,
                     batch_size=32, verbose=0, seed=seed)
    result = model.evaluate(Xte, yte)
    assert result["accuracy"] >= 0.97, result
    assert set(result) >= {"loss", "accuracy"}
    assert len(hist) == 30 and hist.epoch == list(range(30))
    assert hist["loss"][-1] < hist["loss"][0]
    assert hist["accuracy"][-1] > 0.99
    assert all(lr == 1e-3 for lr in hist["lr"])
    proba = model.predict_proba(Xte)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(training.predict_classes(model, Xte), proba.argmax(axis=1))
    assert np.mean(training.predict_classes(model, Xte) == yte) == result["accuracy"]


def test_continuing_training_keeps_optimizer_state(digits):
    Xtr, ytr, _, _ = digits
    Xtr, ytr = Xtr[:300], ytr[:300]
    a = mlp([64, 32, 10], seed=3)
    b = mlp([64, 32, 10], seed=3)
    ga, gb = np.random.default_rng(5), np.random.default_rng(5)
    a.fit(Xtr, ytr, epochs=2, batch_size=50, verbose=0, seed=ga, lr=3e-3)
    opt = a.optimizer
    h2 = a.fit(Xtr, ytr, epochs=2, batch_size=50, verbose=0, seed=ga)  # continues
    assert a.optimizer is opt
    assert h2.epoch == [2, 3] and a.epochs_trained_ == 4
    assert h2["lr"] == [3e-3, 3e-3]
    b.fit(Xtr, ytr, epochs=4, batch_size=50, verbose=0, seed=gb, lr=3e-3)
    # 2 + 2 epochs with the optimizer state kept == 4 epochs in one go, bit for bit
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(pa, pb, err_msg=na)
    sd = opt.state_dict()
    assert all(s["step"] == 4 * 6 for s in sd["state"].values())
    # a new optimizer by name starts from scratch
    a.fit(Xtr, ytr, epochs=1, batch_size=50, verbose=0, optimizer="sgd", lr=0.01)
    assert a.optimizer is not opt


def test_nan_loss_is_reported_with_epoch_and_batch():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4)).astype(np.float32)
    y = rng.normal(size=(64, 1)).astype(np.float32) * 100
    model = mlp([4, 16, 1], activation="tanh")
    with pytest.raises(FloatingPointError, match=r"epoch \d+, batch \d+ of 4 .*learning rate"):
        model.fit(X, y, loss="squared", optimizer="sgd", lr=1e4, epochs=50, batch_size=16,
                  verbose=0, seed=0)


def test_regression_fit_reports_r2():
    X, y = datasets.make_regression_1d(256, function="sin", seed=0)
    model = mlp([1, 32, 1], activation="tanh", seed=0)
    hist = model.fit(X, y, loss="squared", optimizer="adam", lr=1e-2, epochs=150, batch_size=32,
                     verbose=0, seed=0, validation_split=0.2)
    res = model.evaluate(X, y)
    assert set(res) >= {"loss", "r2"} and "accuracy" not in res
    assert res["r2"] > 0.95, res
    assert hist["r2"][-1] > 0.9 and hist["val_r2"][-1] > 0.9
    pred = model.predict(X)
    assert abs(training.r2_score(y, pred) - res["r2"]) < 1e-5


def test_validation_split_is_stratified_and_seeded(digits):
    Xtr, ytr, _, _ = digits
    model = mlp([64, 16, 10])
    h = model.fit(Xtr, ytr, epochs=1, verbose=0, validation_split=0.25, seed=0)
    assert h.params["n_val_samples"] == int(np.ceil(0.25 * len(Xtr)))
    assert {"val_loss", "val_accuracy"} <= set(h.history)


def test_input_checks(digits):
    Xtr, ytr, _, _ = digits
    model = mlp([64, 16, 10])
    with pytest.raises(TypeError, match="astype"):
        model.fit(Xtr.astype(np.float64), ytr, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="samples but y has"):
        model.fit(Xtr, ytr[:-1], epochs=1, verbose=0)
    bad = Xtr.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(bad, ytr, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(Xtr, ytr, epochs=1, batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        model.fit(Xtr, ytr, epochs=1, optimizer="adamw", verbose=0)


def test_verbose_modes(digits, capsys):
    Xtr, ytr, _, _ = digits
    model = mlp([64, 16, 10])
    model.fit(Xtr[:100], ytr[:100], epochs=2, verbose=1)  # not a terminal: a line per epoch
    err = capsys.readouterr().err
    assert err.count("epoch ") == 2 and "\r" not in err and "loss=" in err
    model.fit(Xtr[:100], ytr[:100], epochs=2, verbose=2)
    err = capsys.readouterr().err
    assert err.count("epoch ") == 2 and "samples/s" in err and "loss=" in err
    model.fit(Xtr[:100], ytr[:100], epochs=1, verbose=0)
    assert capsys.readouterr().err == ""


def test_progress_bar_on_a_terminal(digits, capsys, monkeypatch):
    Xtr, ytr, _, _ = digits
    monkeypatch.setattr(training, "_isatty", lambda stream: True)
    model = mlp([64, 16, 10])
    model.fit(Xtr[:300], ytr[:300], epochs=2, batch_size=32, verbose=1)
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err
    assert "/300" in err and "samples/s" in err and "loss=" in err and "accuracy=" in err


def _noisy_validation(digits, n=300):
    Xtr, ytr, _, _ = digits
    rng = np.random.default_rng(1)
    y_val = rng.integers(0, 10, 200)  # random labels: the validation loss rises as it fits
    return Xtr[:n], ytr[:n], (Xtr[n:n + 200], y_val)


def test_early_stopping_in_fit_stops_and_restores(digits):
    X, y, val = _noisy_validation(digits)
    model = mlp([64, 64, 10], seed=0)
    states = {}
    record = LambdaCallback(on_epoch_end=lambda e, logs: states.__setitem__(
        e, model.state_dict()))
    es = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    hist = model.fit(X, y, epochs=50, batch_size=32, lr=3e-3, validation_data=val,
                     callbacks=[record, es], verbose=0, seed=0)
    assert len(hist) < 50 and hist.stopped_epoch == hist.epoch[-1]
    best = int(np.argmin(hist["val_loss"]))
    assert es.best_epoch == best and len(hist) == best + 3
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, states[best][name])
    assert any("early stopping" in m for _, m in hist.events)


def test_halving_with_rollback_in_fit(digits):
    X, y, val = _noisy_validation(digits)
    model = mlp([64, 64, 10], seed=0)
    before, after = {}, {}
    rec_before = LambdaCallback(on_epoch_end=lambda e, logs: before.__setitem__(
        e, (model.state_dict(), model.optimizer.state_dict())))
    rec_after = LambdaCallback(on_epoch_end=lambda e, logs: after.__setitem__(
        e, (model.state_dict(), model.optimizer.state_dict(), model.optimizer.lr)))
    sched = HalveLROnIncrease(monitor="val_loss", rollback=True)
    hist = model.fit(X, y, epochs=8, batch_size=32, lr=3e-3, validation_data=val,
                     callbacks=[rec_before, sched, rec_after], verbose=0, seed=0)
    assert sched.rollbacks, "the validation loss never increased"
    val_loss = hist["val_loss"]
    ref, lr = 0, 3e-3
    for e in range(1, 8):
        if val_loss[e] > val_loss[ref]:
            lr /= 2
            assert e in sched.rollbacks
            w, o, cur_lr = after[e]
            for k, v in w.items():  # weights of the reference epoch
                np.testing.assert_array_equal(v, before[ref][0][k])
            for i, st in o["state"].items():  # Adam's moments and step of the reference epoch
                ref_state = before[ref][1]["state"][i]
                assert st["step"] == ref_state["step"]
                np.testing.assert_array_equal(st["exp_avg"], ref_state["exp_avg"])
                np.testing.assert_array_equal(st["exp_avg_sq"], ref_state["exp_avg_sq"])
        else:
            ref = e
        assert after[e][2] == pytest.approx(lr)
    assert hist["lr"][-1] == pytest.approx(after[6][2])


def test_model_checkpoint_atomic_and_loadable(digits, tmp_path):
    Xtr, ytr, Xte, yte = digits
    model = mlp([64, 16, 10])
    path = str(tmp_path / "ckpt" / "best.npz")
    ck = ModelCheckpoint(path, monitor="val_accuracy", save_best_only=True, save_optimizer=True)
    model.fit(Xtr[:500], ytr[:500], epochs=4, validation_data=(Xte, yte), callbacks=[ck],
              verbose=0, seed=0)
    assert ck.saved and os.path.exists(path)
    assert [f for f in os.listdir(tmp_path / "ckpt")] == ["best.npz"]  # no temporaries left
    loaded = io.load(path)
    assert loaded.evaluate(Xte, yte)["accuracy"] == pytest.approx(ck.best)
    per_epoch = ModelCheckpoint(str(tmp_path / "e{epoch:02d}.npz"), save_best_only=False)
    model.fit(Xtr[:100], ytr[:100], epochs=2, callbacks=[per_epoch], verbose=0)
    assert sorted(os.listdir(tmp_path))[:2] == ["ckpt", "e05.npz"]


def test_history_plot(digits, tmp_path):
    pytest.importorskip("matplotlib")
    Xtr, ytr, Xte, yte = digits
    model = mlp([64, 16, 10])
    h = model.fit(Xtr[:200], ytr[:200], epochs=2, validation_data=(Xte, yte), verbose=0)
    h.plot(tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_cross_entropy_module_entry_matches_the_validating_path():
    # loss_and_grad's C-checked entry (intp labels, C-contiguous logits and gradient buffer)
    # must give the validating path's numbers bit for bit, and decline odd input, which the
    # validating path then converts or rejects.
    import fastnn.functional as F
    from fastnn._kernels import losses as K
    from fastnn.losses import CrossEntropyLoss

    rng = np.random.default_rng(0)
    loss = CrossEntropyLoss()
    for n, c in [(1, 1), (1, 4), (9, 4), (17, 3)]:
        for dt in (np.float32, np.float64):
            z = rng.standard_normal((n, c)).astype(dt)
            y = rng.integers(0, c, n).astype(np.intp)
            g1 = np.empty_like(z)
            v1, _ = loss.loss_and_grad(z, y, grad_out=g1)
            v2, g2 = F.cross_entropy(z, y, return_grad=True)
            assert v1 == v2 and np.array_equal(g1, g2)
    z = rng.standard_normal((9, 4)).astype(np.float32)
    y = rng.integers(0, 4, 9).astype(np.intp)
    rows = np.empty(9)
    g = np.full_like(z, 7.0)
    for bad_y in (y + 4, y - 4, y.astype(np.int32), y[:8], y.astype(np.float64)):
        assert K.cross_entropy_labels_layer(z, bad_y, rows, g, 1) is False
    assert K.cross_entropy_labels_layer(z, y, rows, z, 1) is False          # gradient over z
    assert K.cross_entropy_labels_layer(z, y, rows, g[:, :2].copy(), 1) is False
    assert K.cross_entropy_labels_layer(z, y, rows.astype(np.float32), g, 1) is False
    assert (g == 7.0).all()
    with pytest.raises(ValueError, match="labels must be in"):
        loss.loss_and_grad(z, y + 4, grad_out=g)
    v, _ = loss.loss_and_grad(z, y.astype(np.int32), grad_out=g)   # converted, same value
    assert v == loss.loss_and_grad(z, y, grad_out=np.empty_like(z))[0]
