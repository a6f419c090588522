"""Training that ends in NaN or inf: caught whatever the entry point and whichever update made it.

* the parameters are checked once per epoch, so the last update of an epoch (and of ``fit``)
  is covered, not only the updates followed by a forward pass whose loss is checked;
* hyperparameters that the parameters' dtype cannot hold are refused before any write;
* ``fit(optimizer=...)`` with parameters that are not the model's is an error;
"""
import math
import warnings

import numpy as np
import pytest

import fastnn.training as training
from fastnn import Dense, MLPClassifier, MLPRegressor, Sequential
from fastnn.callbacks import ReduceLROnPlateau
from fastnn.optim import SGD, Adagrad, Adam, RMSprop
from fastnn.parameter import Parameter


def _net(dtype=np.float32, out=3):
    return Sequential(Dense(4, 8, activation="tanh", seed=0), Dense(8, out, seed=1), dtype=dtype)


def _data(n=40, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4)).astype(dtype)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)
    return X, y


class _PoisonSGD(SGD):
    """SGD that writes ``value`` into one element of one parameter after its ``at``-th step."""

    def __init__(self, params, at, value=np.nan, param=0, **kw):
        super().__init__(params, **kw)
        self.at, self.value, self.param, self.calls = at, value, param, 0

    def step(self, closure=None):
        out = super().step(closure)
        self.calls += 1
        if self.calls == self.at:
            self.param_groups[0]["params"][self.param].data.flat[0] = self.value
        return out


def _snapshot(model):
    return [p.data.copy() for p in model.parameters()]


def _assert_finite(model):
    for name, p in model.named_parameters():
        assert np.isfinite(p.data).all(), name


# --- the last update --------------------------------------------------------------------------

@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("param,name", [(0, "0.weight"), (1, "0.bias"), (3, "1.bias")])
def test_last_update_of_fit_raises(value, param, name):
    X, y = _data()
    m = _net()
    # 4 batches x 3 epochs: the 12th step is the last one of fit, never followed by a forward
    opt = _PoisonSGD(m.parameters(), at=12, value=value, param=param, lr=0.01)
    with pytest.raises(FloatingPointError,
                       match=rf"parameter '{name}' holds NaN or inf after the updates of epoch "
                             r"3 \(found after batch 4 of 4"):
        m.fit(X, y, optimizer=opt, epochs=3, batch_size=10, verbose=0, seed=0)
    assert m.epochs_trained_ == 2  # the diverged epoch is not counted


def test_last_update_of_an_epoch_is_caught_at_that_epoch_end():
    X, y = _data()
    m = _net()
    seen = []
    opt = _PoisonSGD(m.parameters(), at=8, lr=0.01)  # last batch of epoch 2 of 5
    with pytest.raises(FloatingPointError, match="epoch 2 "):
        m.fit(X, y, optimizer=opt, epochs=5, batch_size=10, verbose=0, seed=0,
              callbacks=[training_callback(seen)])
    assert seen == [0]  # no callback saw the non-finite epoch


def training_callback(seen):
    from fastnn.callbacks import LambdaCallback
    return LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(epoch))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_real_last_step_overflow_raises(dtype):
    # one batch, one epoch: the only update overflows (targets 1e18, lr 1e21 in float32;
    # 1e150 and 1e170 in float64), the loss before it was finite
    rng = np.random.default_rng(1)
    X = rng.standard_normal((32, 4)).astype(dtype)
    big, lr = (1e18, 1e21) if dtype == np.float32 else (1e150, 1e170)
    y = np.full((32, 1), big, dtype=dtype)
    m = Sequential(Dense(4, 8, "tanh", seed=0), Dense(8, 1, seed=1), dtype=dtype)
    with pytest.raises(FloatingPointError, match="after the updates of epoch 1 .*batch 1 of 1"):
        training.fit(m, X, y, loss="squared", optimizer="sgd", lr=lr, epochs=1, batch_size=32,
                     verbose=0)
    assert not all(np.isfinite(p.data).all() for p in m.parameters())  # left as they are


def test_restore_after_the_last_update_goes_back_to_the_previous_epoch_end():
    X, y = _data()
    m = _net()
    ends = {}
    from fastnn.callbacks import LambdaCallback
    keep = LambdaCallback(on_epoch_end=lambda e, logs: ends.__setitem__(e, _snapshot(m)))
    opt = _PoisonSGD(m.parameters(), at=12, value=np.inf, lr=0.01)
    with pytest.warns(RuntimeWarning, match="after the updates of epoch 3 .*restored the weights "
                                            "and optimizer state of the end of epoch 2"):
        hist = m.fit(X, y, optimizer=opt, epochs=3, batch_size=10, verbose=0, seed=0,
                     on_divergence="restore", callbacks=[keep])
    assert hist.diverged == (2, 3) and hist.stopped_epoch == 2 and len(hist) == 2
    for p, w in zip(m.parameters(), ends[1]):
        np.testing.assert_array_equal(p.data, w)
    assert m.epochs_trained_ == 2
    assert opt.state_dict()["state"][0]["step"] == 8
    # and it trains on from there
    h2 = m.fit(X, y, optimizer="sgd", lr=0.01, epochs=1, batch_size=10, verbose=0, seed=0)
    assert np.isfinite(h2["loss"][0])
    _assert_finite(m)


def test_restore_in_a_one_epoch_fit_goes_back_to_the_start():
    X, y = _data()
    m = _net()
    start = _snapshot(m)
    opt = _PoisonSGD(m.parameters(), at=4, lr=0.01)
    with pytest.warns(RuntimeWarning, match="start of training"):
        hist = m.fit(X, y, optimizer=opt, epochs=1, batch_size=10, verbose=0,
                     on_divergence="restore")
    assert hist.diverged == (0, 3) and len(hist) == 0
    for p, w in zip(m.parameters(), start):
        np.testing.assert_array_equal(p.data, w)


def test_the_check_runs_once_per_epoch(monkeypatch):
    X, y = _data()
    m = _net()
    opt = SGD(m.parameters(), lr=0.01)
    calls = []
    real = opt._params_finite
    monkeypatch.setattr(opt, "_params_finite", lambda: calls.append(1) or real())
    m.fit(X, y, optimizer=opt, epochs=3, batch_size=5, verbose=0)  # 8 batches per epoch
    assert len(calls) == 3


@pytest.mark.parametrize("opt_cls", [SGD, Adam, Adagrad, RMSprop])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_params_finite_sees_every_element(opt_cls, dtype):
    # parameters above one kernel chunk (8192 elements), a NaN or inf in the last element
    ps = [Parameter(np.ones((100, 90), dtype=dtype)), Parameter(np.ones(7, dtype=dtype))]
    opt = opt_cls(ps, lr=1e-3)
    assert opt._params_finite()  # before the first step (no plan yet)
    opt.step()
    for p in ps:
        for value in (np.nan, np.inf, -np.inf):
            keep = p.data.flat[-1]
            p.data.flat[-1] = value
            assert not opt._params_finite()
            p.data.flat[-1] = keep
            assert opt._params_finite()
    big = np.finfo(dtype).max
    ps[0].data.flat[5] = big  # the largest finite value is finite
    assert opt._params_finite()


# --- through the scikit-learn estimators ------------------------------------------------------

def test_mlp_classifier_last_update_overflow_raises():
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((64, 4)) * 1e10).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    est = MLPClassifier(hidden_layer_sizes=(8,), optimizer="sgd", lr=1e30, momentum=0.0,
                        max_iter=1, batch_size=64, random_state=0)
    # the estimators follow scikit-learn: its error, raised after the update that overflowed
    with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"):
        est.fit(X, y)


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_mlp_regressor_last_update_overflow_raises(method):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 4)).astype(np.float32)
    y = np.full(32, 1e18, np.float32)
    est = MLPRegressor(hidden_layer_sizes=(8,), activation="tanh", optimizer="sgd", lr=1e21,
                       momentum=0.0, max_iter=1, batch_size=32, random_state=0)
    with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"):
        getattr(est, method)(X, y)


def test_mlp_partial_fit_later_call_raises():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 4)).astype(np.float32)
    est = MLPRegressor(hidden_layer_sizes=(8,), activation="tanh", optimizer="sgd", lr=1e21,
                       momentum=0.0, batch_size=32, random_state=0)
    est.partial_fit(X, np.zeros(32, np.float32))  # zero targets: a finite first call
    with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"):
        est.partial_fit(X, np.full(32, 1e18, np.float32))


# --- hyperparameters the dtype cannot hold ----------------------------------------------------

F32_BAD = [
    (Adam, dict(eps=1e-46), "Invalid epsilon value: 1e-46 for float32"),
    (Adam, dict(eps=1e-40), "Invalid epsilon value: 1e-40 for float32"),
    (Adam, dict(eps=1e-30), r"Invalid epsilon value: 1e-30 for float32 .*expected >= 3.43e-18"),
    (Adam, dict(lr=1e36, betas=(0.999, 0.999)), r"first step size lr / \(1 - beta1\)\): 1e\+39 "
                                                r"overflows float32"),
    (Adam, dict(weight_decay=1e39), "Invalid weight_decay value: 1e\\+39 overflows float32"),
    (Adam, dict(l1=1e39, l1_proximal=True), "Invalid l1 value: 1e\\+39 overflows float32"),
    (SGD, dict(lr=1e39), "Invalid learning rate: 1e\\+39 overflows float32"),
    (SGD, dict(lr=1e-3, momentum=1e39), "Invalid momentum value: 1e\\+39 overflows float32"),
    (SGD, dict(lr=1e-3, momentum=1e39, nesterov=True), "Invalid momentum value"),
    (RMSprop, dict(eps=1e-39), "Invalid epsilon value: 1e-39 for float32"),
    (RMSprop, dict(momentum=4e38), "Invalid momentum value: 4e\\+38 overflows float32"),
    (Adagrad, dict(eps=1e-45), "Invalid epsilon value"),
    (Adagrad, dict(initial_accumulator_value=1e39), "Invalid initial_accumulator_value"),
]


@pytest.mark.parametrize("cls,kw,match", F32_BAD,
                         ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(F32_BAD)])
def test_float32_out_of_range_hyperparameters_are_refused(cls, kw, match):
    p = Parameter(np.ones(3, np.float32))
    with pytest.raises(ValueError, match=match):
        cls([p], **kw)
    # the same values are fine for float64 parameters, and train to finite values
    q = Parameter(np.ones(3, np.float64))
    q.grad[:] = [0.0, 1e-3, 1.0]
    opt = cls([q], **kw)
    if cls is Adam and kw.get("lr", 0) > 1e30:
        return  # a 1e39 step is not expected to stay finite; it is only representable
    opt.step()
    assert np.isfinite(q.data).all()


def _eps_bound(cls, dtype, decay=None):
    tiny = float(np.finfo(dtype).tiny)
    decay = {Adam: 0.999, RMSprop: 0.99, Adagrad: 0.0}[cls] if decay is None else decay
    return math.sqrt(tiny / (1.0 - decay))


@pytest.mark.parametrize("cls", [Adam, RMSprop, Adagrad])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eps_zero_subnormal_or_too_small_is_refused_in_both_dtypes(cls, dtype):
    tiny = float(np.finfo(dtype).tiny)
    bound = _eps_bound(cls, dtype)
    for eps in (0.0, 5e-324 if dtype == np.float64 else 1e-45, tiny / 2, tiny, bound * 0.99):
        with pytest.raises(ValueError, match="Invalid epsilon value"):
            cls([Parameter(np.ones(2, dtype))], eps=eps)
    # the bound itself is accepted and a zero gradient stays finite (no 0/0)
    p = Parameter(np.ones(2, dtype))
    opt = cls([p], eps=bound)
    opt.step()
    np.testing.assert_array_equal(p.data, 1.0)


def test_eps_bound_follows_the_decay_rate():
    p = [Parameter(np.ones(2, np.float32))]
    b = _eps_bound(Adam, np.float32, 0.999999)
    with pytest.raises(ValueError, match="1 - 0.999999"):
        Adam(p, betas=(0.9, 0.999999), eps=b * 0.99)
    Adam(p, betas=(0.9, 0.999999), eps=b)
    with pytest.raises(ValueError, match="1 - 0.5"):
        RMSprop(p, alpha=0.5, eps=_eps_bound(RMSprop, np.float32, 0.5) * 0.99)


@pytest.mark.parametrize("cls", [Adam, RMSprop, Adagrad])
def test_at_the_eps_bound_tiny_gradients_give_ordinary_steps(cls):
    """The reason for the bound: the kernels flush second moments below float32's smallest
    normal number to 0; with a smaller eps a coordinate with a gradient of ~1e-20 then moved
    by lr * g / eps (8e14 lr for Adam with eps=1.2e-38). At the bound no step exceeds the
    optimizer's own largest step (RMSprop's first step is lr / sqrt(1 - alpha) = 10 lr)."""
    rng = np.random.default_rng(0)
    n, lr = 2000, 1e-3
    p = Parameter(np.zeros(n, np.float32))
    opt = cls([p], lr=lr, eps=_eps_bound(cls, np.float32))
    scales = 10.0 ** rng.uniform(-25, -12, n)
    worst = 0.0
    for t in range(150):
        p.grad[:] = scales * rng.standard_normal(n) * (t < 5 or rng.random() < 0.5)
        before = p.data.copy()
        opt.step()
        worst = max(worst, float(np.abs(p.data - before).max()))
    limit = {Adam: 1.5, RMSprop: 10.5, Adagrad: 1.01}[cls]
    assert worst <= limit * lr


def test_eps_zero_is_nan_in_the_kernel():
    # the reason for the rule: with eps=0 a coordinate whose gradient is 0 computes 0/0
    from fastnn._kernels.optim import UpdatePlan
    p = Parameter(np.ones(2, np.float64))
    m, v = np.zeros(2), np.zeros(2)
    UpdatePlan([p], [m, v]).adam(1e-3, 0.9, 0.999, 0.0, 0.1, 0.001, 0.0, 0.0, 0.0, 1)
    assert np.isnan(p.data).all()


def test_a_hand_edited_group_is_checked_at_the_first_step():
    p = Parameter(np.ones(2, np.float32))
    opt = Adam([p])
    opt.param_groups[0]["eps"] = 0.0
    with pytest.raises(ValueError, match="Invalid epsilon value: 0 for float32"):
        opt.step()
    np.testing.assert_array_equal(p.data, 1.0)


def test_boundaries_are_accepted():
    big = float(np.finfo(np.float32).max)
    p = Parameter(np.ones(2, np.float32))
    SGD([p], lr=big, momentum=big)
    Adam([p], lr=big * (1 - 0.9), eps=_eps_bound(Adam, np.float32))


def test_nothing_is_written_when_refused():
    p = Parameter(np.ones(3, np.float32))
    p.grad[:] = 1.0
    opt = SGD([p], lr=0.1)
    with pytest.raises(ValueError, match="overflows float32"):
        opt.lr = 1e39
    assert opt.lr == 0.1
    with pytest.raises(ValueError, match="overflows float32"):
        opt.add_param_group({"params": [Parameter(np.ones(2, np.float32))], "lr": 1e39})
    assert len(opt.param_groups) == 1
    opt.step()
    np.testing.assert_allclose(p.data, 0.9)


def test_load_state_dict_from_float64_into_float32_is_refused():
    q = Parameter(np.ones(3, np.float64))
    src = SGD([q], lr=1e39)
    src.step()
    p = Parameter(np.ones(3, np.float32))
    dst = SGD([p], lr=0.1)
    with pytest.raises(ValueError, match="Invalid learning rate: 1e\\+39 overflows float32"):
        dst.load_state_dict(src.state_dict())
    assert dst.lr == 0.1 and dst.state == {}


def test_dtype_unknown_at_construction_is_checked_at_the_first_step():
    p = Parameter(np.ones(3, np.float64))
    opt = SGD([p], lr=1e39)   # valid for float64
    p.data = np.ones(3, np.float32)  # rebound to float32 before the first step
    p.grad = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="overflows float32"):
        opt.step()
    np.testing.assert_array_equal(p.data, 1.0)


def test_fit_with_out_of_range_lr_fails_before_training():
    X, y = _data()
    m = _net()
    before = _snapshot(m)
    with pytest.raises(ValueError, match="overflows float32"):
        m.fit(X, y, optimizer="sgd", lr=1e39, epochs=1, verbose=0)
    for p, w in zip(m.parameters(), before):
        np.testing.assert_array_equal(p.data, w)
    with pytest.raises(ValueError, match="Invalid epsilon value"):
        MLPClassifier(hidden_layer_sizes=(4,), solver="rmsprop", optimizer_params={"eps": 1e-46},
                      max_iter=1).fit(X, y)


def test_small_learning_rates_stay_allowed():
    # shrinking schedules may take lr below float32's range: an lr of 0 writes nothing, so
    # only overflow is refused
    p = Parameter(np.ones(3, np.float32))
    opt = SGD([p], lr=0.1)
    opt.lr = 1e-45
    opt.lr = 0.0
    X, y = _data()
    m = _net()
    cb = ReduceLROnPlateau(monitor="loss", factor=1e-30, patience=0, min_delta=10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        m.fit(X, y, optimizer="sgd", lr=0.1, epochs=4, batch_size=10, verbose=0,
              callbacks=[cb])
    assert m.optimizer.lr < 1e-60
    _assert_finite(m)


# --- an optimizer over other parameters -------------------------------------------------------

def test_optimizer_of_another_model_is_an_error():
    X, y = _data()
    m, other = _net(), _net()
    before = _snapshot(m)
    with pytest.raises(ValueError, match="holds 4 of 4 parameters that do not belong to the "
                                         "model"):
        m.fit(X, y, optimizer=SGD(other.parameters()), epochs=1, verbose=0)
    for p, w in zip(m.parameters(), before):
        np.testing.assert_array_equal(p.data, w)
    assert m.optimizer is None  # nothing kept from the refused call
    # a copy has its own parameters, too
    with pytest.raises(ValueError, match="do not belong"):
        m.fit(X, y, optimizer=Adam(m.copy().parameters()), epochs=1, verbose=0)


def test_optimizer_mixing_own_and_foreign_parameters_is_an_error():
    X, y = _data()
    m, other = _net(), _net()
    opt = SGD(m.parameters()[:2] + other.parameters()[2:])
    with pytest.raises(ValueError, match="holds 2 of 4 parameters that do not belong"):
        m.fit(X, y, optimizer=opt, epochs=1, verbose=0)


def test_optimizer_with_no_parameters_is_an_error():
    X, y = _data()
    with pytest.raises(ValueError, match="holds none of the model's parameters"):
        _net().fit(X, y, optimizer=SGD([{"params": []}]), epochs=1, verbose=0)


def test_a_subset_freezes_the_other_parameters():
    X, y = _data()
    m = _net()
    before = _snapshot(m)
    m.fit(X, y, optimizer=SGD(m[1].parameters(), lr=0.1), epochs=2, batch_size=10, verbose=0)
    np.testing.assert_array_equal(m[0].weight.data, before[0])  # frozen
    np.testing.assert_array_equal(m[0].bias.data, before[1])
    assert not np.array_equal(m[1].weight.data, before[2])      # trained
    # a later fit without an optimizer keeps training the subset
    m.fit(X, y, epochs=1, batch_size=10, verbose=0)
    np.testing.assert_array_equal(m[0].weight.data, before[0])


@pytest.mark.parametrize("bad", [5, object(), [SGD]])
def test_optimizer_of_the_wrong_type_is_a_type_error(bad):
    X, y = _data()
    with pytest.raises(TypeError, match="optimizer must be a name .* or None, got"):
        _net().fit(X, y, optimizer=bad, epochs=1, verbose=0)


def test_a_refused_optimizer_is_left_alone():
    X, y = _data()
    m, other = _net(), _net()
    opt = SGD(other.parameters(), lr=0.5)
    with pytest.raises(ValueError, match="do not belong"):
        m.fit(X, y, optimizer=opt, lr=0.01, epochs=1, verbose=0)
    assert opt.lr == 0.5
