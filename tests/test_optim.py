"""fastnn.optim: every update, step by step, against a NumPy float64 implementation of its formula."""
import json

import numpy as np
import pytest

from fastnn._kernels import optim as _k
from fastnn.functional.runtime import override_thresholds
from fastnn.optim import SGD, Adagrad, Adam, Optimizer, RMSprop
from fastnn.parameter import Parameter

FLT_MIN = np.finfo(np.float32).tiny


# --------------------------------------------------------------------------------------------
# Reference implementations (float64, straight from the formulas in the docstrings)
# --------------------------------------------------------------------------------------------
class Reference:
    def __init__(self, name, hp):
        self.name, self.hp, self.t, self.state = name, hp, 0, {}

    def step(self, ws, gs, regs):
        hp, t = self.hp, self.t
        lr = hp.get("lr") / (1.0 + hp.get("decay", 0.0) * t)
        wd, l1, prox = hp.get("weight_decay", 0.0), hp.get("l1", 0.0), hp.get("l1_proximal", False)
        for i, (w, g, reg) in enumerate(zip(ws, gs, regs)):
            g = g.astype(np.float64)
            if reg:
                g = g + wd * w
                if not prox:
                    g = g + l1 * np.sign(w)
            st = self.state.setdefault(i, {})
            thr = None
            if self.name == "SGD":
                mu = hp.get("momentum", 0.0)
                if mu:
                    b = mu * st.get("b", 0.0) + g
                    st["b"] = b
                    d = g + mu * b if hp.get("nesterov") else b
                else:
                    d = g
                w -= lr * d
                thr = lr * l1
            elif self.name == "Adagrad":
                s = st.get("s", hp.get("initial_accumulator_value", 0.0)) + g * g
                st["s"] = s
                denom = np.sqrt(s) + hp.get("eps", 1e-10)
                w -= lr * g / denom
                thr = lr * l1 / denom
            elif self.name == "RMSprop":
                a = hp.get("alpha", 0.99)
                v = a * st.get("v", 0.0) + (1 - a) * g * g
                st["v"] = v
                denom = np.sqrt(v) + hp.get("eps", 1e-8)
                mu = hp.get("momentum", 0.0)
                if mu:
                    b = mu * st.get("b", 0.0) + g / denom
                    st["b"] = b
                    w -= lr * b
                else:
                    w -= lr * g / denom
                thr = lr * l1 / denom
            elif self.name == "Adam":
                b1, b2 = hp.get("betas", (0.9, 0.999))
                m = b1 * st.get("m", 0.0) + (1 - b1) * g
                v = b2 * st.get("v", 0.0) + (1 - b2) * g * g
                st["m"], st["v"] = m, v
                k = t + 1
                denom = np.sqrt(v) / np.sqrt(1 - b2 ** k) + hp.get("eps", 1e-8)
                w -= lr / (1 - b1 ** k) * m / denom
                thr = lr * l1 / denom
            if reg and prox and l1:
                w[...] = np.sign(w) * np.maximum(np.abs(w) - thr, 0.0)
        self.t += 1


CLASSES = {"SGD": SGD, "Adagrad": Adagrad, "RMSprop": RMSprop, "Adam": Adam}

CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, decay=0.05, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, l1=0.01, weight_decay=0.02)),
    ("SGD", dict(lr=0.1, momentum=0.5, l1=0.05, l1_proximal=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, initial_accumulator_value=0.1, decay=0.1, weight_decay=0.01,
                     l1=0.02)),
    ("Adagrad", dict(lr=0.1, l1=0.05, l1_proximal=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.9, weight_decay=0.01, l1=0.01)),
    ("RMSprop", dict(lr=0.01, l1=0.5, l1_proximal=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, decay=0.1, weight_decay=0.05, l1=0.01)),
    ("Adam", dict(lr=0.05, l1=0.5, l1_proximal=True)),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in CONFIGS]

# (shape, regularize): a weight, a bias, a weight that spans two kernel chunks, a single element
SHAPES = [((7, 5), True), ((5,), False), ((91, 97), True), ((1, 1), True)]


def make_params(dtype, rng, shapes=SHAPES):
    return [Parameter(rng.standard_normal(s).astype(dtype), name=f"p{i}", regularize=r)
            for i, (s, r) in enumerate(shapes)]


@pytest.fixture
def parallel_everywhere():
    """Make every group take the prange path when n_threads > 1."""
    with override_thresholds("optim", min_work=1):
        yield


@pytest.mark.parametrize("name,hp", CONFIGS, ids=IDS)
def test_update_matches_reference(name, hp, dtype, n_threads, rng, parallel_everywhere):
    params = make_params(dtype, rng)
    ws = [p.data.astype(np.float64) for p in params]
    opt = CLASSES[name](params, n_threads=n_threads, **hp)
    ref = Reference(name, hp)
    rtol, atol = (1e-12, 1e-13) if dtype == np.float64 else (2e-4, 2e-6)
    for _ in range(6):
        gs = [rng.standard_normal(p.data.shape) for p in params]
        for p, g in zip(params, gs):
            p.grad[...] = g
        opt.step()
        ref.step(ws, [p.grad for p in params], [p.regularize for p in params])
        for p, w in zip(params, ws):
            assert p.data.dtype == dtype
            np.testing.assert_allclose(p.data, w, rtol=rtol, atol=atol)


def test_adam_state_matches_reference(rng):
    params = make_params(np.float64, rng)
    opt = Adam(params, lr=0.01)
    ref = Reference("Adam", dict(lr=0.01))
    ws = [p.data.copy() for p in params]
    for _ in range(3):
        for p in params:
            p.grad[...] = rng.standard_normal(p.shape)
        opt.step()
        ref.step(ws, [p.grad for p in params], [p.regularize for p in params])
    for i, p in enumerate(params):
        st = opt.state[p]
        assert st["step"] == 3
        np.testing.assert_allclose(st["exp_avg"], ref.state[i]["m"], rtol=1e-13)
        np.testing.assert_allclose(st["exp_avg_sq"], ref.state[i]["v"], rtol=1e-13)


@pytest.mark.parametrize("name,hp", [
    ("SGD", dict(lr=0.1, weight_decay=0.5, l1=0.5)),
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.5, l1=0.5, l1_proximal=True)),
    ("Adagrad", dict(weight_decay=0.5, l1=0.5, l1_proximal=True)),
    ("RMSprop", dict(weight_decay=0.5, l1=0.5)),
    ("Adam", dict(weight_decay=0.5, l1=0.5)),
    ("Adam", dict(weight_decay=0.5, l1=0.5, l1_proximal=True)),
])
def test_penalties_leave_biases_alone(name, hp, dtype, rng):
    weight = Parameter(rng.standard_normal((4, 3)).astype(dtype), regularize=True)
    bias = Parameter(rng.standard_normal(3).astype(dtype), regularize=False)
    w0, b0 = weight.data.copy(), bias.data.copy()
    opt = CLASSES[name]([weight, bias], **hp)
    for _ in range(3):
        opt.step()               # zero data gradients: only the penalties can move anything
    np.testing.assert_array_equal(bias.data, b0)
    assert np.abs(weight.data).sum() < np.abs(w0).sum()  # the penalties shrink the weights


@pytest.mark.parametrize("name,hp", CONFIGS, ids=IDS)
def test_dtype_and_arrays_never_change(name, hp, rng):
    params = make_params(np.float32, rng)
    arrays = [(p.data, p.grad) for p in params]
    # NumPy float64 scalars as hyperparameters must not promote float32 parameters
    hp = {k: (np.float64(v) if isinstance(v, float) else v) for k, v in hp.items()}
    opt = CLASSES[name](params, **hp)
    for _ in range(3):
        for p in params:
            p.grad[...] = rng.standard_normal(p.shape)
        opt.step()
    for p, (d, g) in zip(params, arrays):
        assert p.data is d and p.grad is g
        assert p.data.dtype == np.float32 and p.grad.dtype == np.float32
    for st in opt.state.values():
        for k, v in st.items():
            if k != "step":
                assert v.dtype == np.float32
    assert all(type(v) is float for g in opt.param_groups for k, v in g.items()
               if k in ("lr", "weight_decay", "l1", "decay", "eps"))


def _check_plain(obj, path="sd"):
    """Only numbers, strings, bools, lists, dicts and ndarrays (savable without pickle)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, (int, str)), path
            _check_plain(v, f"{path}[{k!r}]")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_plain(v, f"{path}[{i}]")
    elif isinstance(obj, np.ndarray):
        assert obj.dtype.kind == "f", path
    else:
        assert type(obj) in (int, float, str, bool), (path, type(obj))


@pytest.mark.parametrize("name,hp", CONFIGS, ids=IDS)
def test_state_dict_round_trip_continues_identically(name, hp, rng):
    params = make_params(np.float32, rng)
    twins = [Parameter(p.data.copy(), name=p.name, regularize=p.regularize) for p in params]
    grads = [[rng.standard_normal(p.shape).astype(np.float32) for p in params]
             for _ in range(6)]
    opt = CLASSES[name](params, **hp)
    for gs in grads[:3]:
        for p, g in zip(params, gs):
            p.grad[...] = g
        opt.step()
    sd = opt.state_dict()
    _check_plain(sd)
    # through JSON for the scalars (keys become strings), arrays kept aside as a saver would
    arrays = {}
    for i, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, np.ndarray):
                arrays[(i, k)] = v
    plain = json.loads(json.dumps(sd, default=lambda a: None))
    for (i, k), v in arrays.items():
        plain["state"][str(i)][k] = v
    for tw, p in zip(twins, params):
        tw.data[...] = p.data
    opt2 = CLASSES[name](twins, lr=0.123)  # hyperparameters come from the state_dict
    opt2.load_state_dict(plain)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    for gs in grads[3:]:
        for p, tw, g in zip(params, twins, gs):
            p.grad[...] = g
            tw.grad[...] = g
        opt.step()
        opt2.step()
    for p, tw in zip(params, twins):
        np.testing.assert_array_equal(p.data, tw.data)


def test_state_dict_is_a_copy_and_before_first_step(rng):
    p = Parameter(rng.standard_normal((3, 2)))
    opt = Adam([p])
    sd0 = opt.state_dict()
    assert sd0["state"] == {} and sd0["param_groups"][0]["params"] == [0]
    assert sd0["param_groups"][0]["betas"] == [0.9, 0.999]
    p.grad[...] = 1.0
    opt.step()
    sd = opt.state_dict()
    saved = sd["state"][0]["exp_avg"].copy()
    opt.step()
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], saved)
    opt2 = Adam([Parameter(p.data.copy())])
    opt2.load_state_dict(sd0)      # loading an empty state keeps the optimizer fresh
    assert opt2.state == {}


def test_load_state_dict_errors_leave_optimizer_unchanged(rng):
    p = Parameter(rng.standard_normal((3, 2)))
    opt = Adam([p], lr=0.01)
    p.grad[...] = 1.0
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="for a Adam optimizer, not SGD"):
        SGD([Parameter(p.data.copy())]).load_state_dict(sd)
    other = Adam([Parameter(np.zeros((2, 3)))], lr=0.5)
    with pytest.raises(ValueError, match="has shape"):
        other.load_state_dict(sd)
    assert other.param_groups[0]["lr"] == 0.5 and other.state == {}
    with pytest.raises(ValueError, match="parameter groups"):
        opt.load_state_dict({**sd, "param_groups": sd["param_groups"] * 2})
    bad = {**sd, "param_groups": [{**sd["param_groups"][0], "lr": -1.0}]}
    with pytest.raises(ValueError, match="Invalid learning rate: -1.0"):
        opt.load_state_dict(bad)
    assert opt.param_groups[0]["lr"] == 0.01


def test_param_groups_with_different_lr(rng):
    a = Parameter(rng.standard_normal(4))
    b = Parameter(rng.standard_normal(4))
    a0, b0 = a.data.copy(), b.data.copy()
    opt = SGD([{"params": [a]}, {"params": [b], "lr": 0.01}], lr=0.1)
    a.grad[...] = 1.0
    b.grad[...] = 1.0
    opt.step()
    np.testing.assert_allclose(a.data, a0 - 0.1)
    np.testing.assert_allclose(b.data, b0 - 0.01)
    assert opt.lr == 0.1
    opt.lr = 0.5
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.5]
    with pytest.raises(ValueError, match="Invalid learning rate: -0.1"):
        opt.lr = -0.1
    c = Parameter(np.zeros(2))
    opt.add_param_group({"params": [c], "lr": 2.0})
    c.grad[...] = 1.0
    opt.step()
    np.testing.assert_allclose(c.data, [-2.0, -2.0])


def test_keras_decay_schedule():
    p = Parameter(np.zeros(1))
    opt = SGD([p], lr=0.1, decay=0.5)
    p.grad[...] = 1.0
    lrs = []
    for _ in range(4):
        lrs.append(opt.get_lr()[0])
        opt.step()
    np.testing.assert_allclose(lrs, [0.1 / (1 + 0.5 * t) for t in range(4)])
    np.testing.assert_allclose(p.data, [-sum(lrs)])


@pytest.mark.parametrize("make,match,exc", [
    (lambda ps: SGD(ps, lr=-0.1), "Invalid learning rate: -0.1", ValueError),
    (lambda ps: SGD(ps, lr="0.1"), "Invalid learning rate", TypeError),
    (lambda ps: SGD(ps, lr=float("nan")), "Invalid learning rate: nan", ValueError),
    (lambda ps: SGD(ps, momentum=-0.5), "Invalid momentum value: -0.5", ValueError),
    (lambda ps: SGD(ps, nesterov=True), "Nesterov momentum requires a momentum > 0", ValueError),
    (lambda ps: SGD(ps, weight_decay=-1), "Invalid weight_decay value: -1", ValueError),
    (lambda ps: SGD(ps, l1=-1), "Invalid l1 value: -1", ValueError),
    (lambda ps: SGD(ps, decay=-1), "Invalid decay: -1", ValueError),
    (lambda ps: SGD(ps, l1_proximal=1), "Invalid l1_proximal", TypeError),
    (lambda ps: Adam(ps, betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0",
     ValueError),
    (lambda ps: Adam(ps, betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1",
     ValueError),
    (lambda ps: Adam(ps, betas=0.9), "Invalid betas", ValueError),
    (lambda ps: Adam(ps, eps=-1e-8), "Invalid epsilon value: -1e-08", ValueError),
    (lambda ps: RMSprop(ps, alpha=1.5), "Invalid alpha value: 1.5", ValueError),
    (lambda ps: Adagrad(ps, initial_accumulator_value=-1), "initial_accumulator_value",
     ValueError),
    (lambda ps: SGD([], lr=0.1), "empty parameter list", ValueError),
    (lambda ps: SGD([np.zeros(3)]), "fastnn.Parameter", TypeError),
    (lambda ps: SGD(ps[0]), "wrap it in a list", TypeError),
    (lambda ps: SGD(ps + ps), "appears twice", ValueError),
    (lambda ps: SGD([{"params": ps}, {"params": ps}]), "more than one parameter group",
     ValueError),
    (lambda ps: SGD([{"params": ps, "betas": (0.9, 0.9)}]), "unknown hyperparameters",
     ValueError),
    (lambda ps: SGD(ps, n_threads=0), "n_threads", ValueError),
])
def test_hyperparameter_validation(make, match, exc):
    ps = [Parameter(np.zeros(3))]
    with pytest.raises(exc, match=match):
        make(ps)


def test_parameter_problems_are_clear_errors():
    p = Parameter(np.zeros(3))
    p.grad = None
    with pytest.raises(ValueError, match="has no gradient array"):
        SGD([p]).step()
    a, b = Parameter(np.zeros(3)), Parameter(np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="mixes float64 and float32"):
        SGD([a, b]).step()
    SGD([{"params": [a]}, {"params": [b]}]).step()  # one dtype per group is fine
    c = Parameter(np.zeros(3))
    c.data.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        SGD([c]).step()
    d = Parameter(np.zeros(4))
    d.grad = d.data
    with pytest.raises(ValueError, match="share memory"):
        SGD([d]).step()


def test_rebound_arrays_are_followed_and_state_kept(rng):
    p = Parameter(rng.standard_normal((3, 3)))
    opt = SGD([p], lr=0.1, momentum=0.9)
    p.grad[...] = 1.0
    opt.step()
    buf = opt.state[p]["momentum_buffer"].copy()
    p.data = p.data.copy()          # e.g. a model's load_state_dict that rebinds
    p.grad = np.ones_like(p.data)
    before = p.data.copy()
    opt.step()
    np.testing.assert_allclose(p.data, before - 0.1 * (0.9 * buf + 1.0))
    p.data = np.zeros((2, 2))
    p.grad = np.zeros((2, 2))
    with pytest.raises(ValueError, match="has shape"):
        opt.step()


def test_zero_grad_and_closure(rng):
    ps = make_params(np.float32, rng)
    opt = Adam(ps)
    for p in ps:
        p.grad[...] = 1.0
    opt.zero_grad()                  # before the first step (no plan yet)
    assert all(not p.grad.any() for p in ps)
    grads = [p.grad for p in ps]
    assert opt.step(closure=lambda: 1.5) == 1.5
    for p in ps:
        p.grad[...] = 2.0
    opt.zero_grad()                  # through the compiled plan
    assert all(not p.grad.any() and p.grad is g for p, g in zip(ps, grads))
    assert "Adam" in repr(opt) and "lr: 0.001" in repr(opt)


@pytest.mark.parametrize("name,hp", CONFIGS, ids=IDS)
def test_one_and_two_threads_identical(name, hp, rng):
    shapes = [((300, 301), True), ((301,), False), ((8193,), True)]
    init = make_params(np.float64, rng, shapes)
    grads = [[rng.standard_normal(p.shape) for p in init] for _ in range(3)]
    default = _k.parallel_thresholds()["min_work"]

    def run(dtype, n_threads, threshold):
        with override_thresholds("optim", min_work=threshold):
            ps = [Parameter(p.data.astype(dtype), regularize=p.regularize) for p in init]
            opt = CLASSES[name](ps, n_threads=n_threads, **hp)
            for gs in grads:
                for p, g in zip(ps, gs):
                    p.grad[...] = g
                opt.step()
            return [p.data for p in ps]

    for dtype in (np.float32, np.float64):
        serial = run(dtype, 1, 1)
        for n_threads, threshold in [(2, 1), (2, default)]:
            for a, b in zip(serial, run(dtype, n_threads, threshold)):
                np.testing.assert_array_equal(a, b)


def test_proximal_l1_gives_exact_zeros(rng):
    weight = Parameter(rng.standard_normal((50, 40)) * 0.1, regularize=True)
    bias = Parameter(rng.standard_normal(40) * 0.1, regularize=False)
    opt = SGD([weight, bias], lr=0.1, l1=0.5, l1_proximal=True)
    for _ in range(5):
        weight.grad[...] = rng.standard_normal(weight.shape) * 0.01
        bias.grad[...] = rng.standard_normal(40) * 0.01
        opt.step()
    assert (weight.data == 0).mean() > 0.9            # soft-threshold: exact zeros
    assert not np.signbit(weight.data[weight.data == 0]).any()   # +0, not -0
    assert (bias.data == 0).sum() == 0
    sub = Parameter(weight.data * 0 + rng.standard_normal((50, 40)) * 0.1)
    opt2 = SGD([sub], lr=0.1, l1=0.5)                # subgradient: oscillates, no exact zeros
    for _ in range(5):
        sub.grad[...] = 0
        opt2.step()
    assert (sub.data == 0).mean() < 0.05
    # Adam's proximal step zeroes too
    w = Parameter(rng.standard_normal((30, 30)) * 0.01)
    opt3 = Adam([w], lr=0.01, l1=1.0, l1_proximal=True)
    for _ in range(3):
        w.grad[...] = rng.standard_normal((30, 30)) * 1e-3
        opt3.step()
    assert (w.data == 0).mean() > 0.5


def _n_subnormal(a):
    a = np.asarray(a)
    tiny = np.finfo(a.dtype).tiny
    return int(((a != 0) & (np.abs(a) < tiny)).sum())


def _numpy_adam_f32(w, grads, lr, b1, b2, eps):
    """Float32 NumPy Adam without any flushing (what NumPy/PyTorch compute)."""
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    f = np.float32
    for t, g in enumerate(grads, 1):
        m = f(b1) * m + f(1 - b1) * g
        v = f(b2) * v + f(1 - b2) * g * g
        denom = np.sqrt(v) * f(1 / np.sqrt(1 - b2 ** t)) + f(eps)
        w = w - f(lr / (1 - b1 ** t)) * m / denom
    return w, m, v


@pytest.mark.parametrize("name,hp,names", [
    ("Adam", dict(lr=1e-3, betas=(0.9, 0.9)), ("exp_avg", "exp_avg_sq")),
    ("SGD", dict(lr=1e-3, momentum=0.9), ("momentum_buffer",)),
    ("RMSprop", dict(lr=1e-3, alpha=0.9, momentum=0.9), ("square_avg", "momentum_buffer")),
])
def test_state_flushes_subnormals_to_zero(name, hp, names, dtype, rng):
    # inputs that are active once and then never again: their state decays geometrically
    n_steps = 1100 if dtype == np.float32 else 7000
    w0 = rng.standard_normal(64).astype(dtype)
    p = Parameter(w0.copy())
    opt = CLASSES[name]([p], **hp)
    grads = []
    for t in range(n_steps):
        g = np.zeros(64, dtype)
        g[:32] = rng.standard_normal(32) * 1e-2          # always active
        if t == 0:
            g[32:] = rng.standard_normal(32) * 1e-2      # active only at the first step
        p.grad[...] = g
        opt.step()
        if dtype == np.float32 and name == "Adam":
            grads.append(g)
    for k in names:
        s = opt.state[p][k]
        assert _n_subnormal(s) == 0
        assert np.all(s[32:] == 0)                       # decayed below the normal range: 0
    if dtype == np.float32 and name == "Adam":
        ref_w, ref_m, ref_v = _numpy_adam_f32(w0.copy(), grads, 1e-3, 0.9, 0.9, 1e-8)
        assert _n_subnormal(ref_m) + _n_subnormal(ref_v) > 0   # NumPy keeps subnormals ...
        # ... and the flush changes the weights by less than rounding
        np.testing.assert_allclose(p.data, ref_w, rtol=1e-5, atol=1e-7)
    # the process's floating-point mode is untouched: subnormal arithmetic still works
    x = np.array([1e-38], np.float32) * np.float32(0.01)
    assert x[0] != 0
    assert (np.array([1e-300]) * 1e-10)[0] != 0


def test_state_views_are_live_and_flat(rng):
    ps = make_params(np.float64, rng)
    opt = RMSprop(ps, momentum=0.9)
    assert opt.state == {}
    for p in ps:
        p.grad[...] = 1.0
    opt.step()
    st = opt.state
    assert set(st) == set(ps)
    for p in ps:
        assert st[p]["square_avg"].shape == p.shape
        assert st[p]["step"] == 1
    st[ps[0]]["square_avg"][...] = 7.0
    assert np.all(opt.state[ps[0]]["square_avg"] == 7.0)


def test_adding_momentum_later_creates_its_buffer(rng):
    p = Parameter(rng.standard_normal(5))
    opt = SGD([p], lr=0.1)
    p.grad[...] = 1.0
    opt.step()
    assert "momentum_buffer" not in opt.state[p]
    opt.param_groups[0]["momentum"] = 0.9
    before = p.data.copy()
    opt.step()
    np.testing.assert_allclose(p.data, before - 0.1)   # b = 0.9 * 0 + g
    opt.step()
    np.testing.assert_allclose(opt.state[p]["momentum_buffer"], 1.9)


def test_base_class_is_abstract():
    with pytest.raises(NotImplementedError):
        Optimizer([Parameter(np.zeros(2))], dict(lr=0.1, decay=0.0, weight_decay=0.0, l1=0.0,
                                                  l1_proximal=False)).step()
