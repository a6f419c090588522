"""Losses: values against NumPy references, gradients against central differences (float64),
reductions, targets, errors, threads, and the loss classes."""
import numpy as np
import pytest

import fastnn.functional as F
from fastnn import losses
from fastnn._kernels import losses as _kernel

LOSS_FNS = {"cross_entropy": F.cross_entropy, "sparsemax": F.sparsemax_loss}


def _rtol(dtype):
    return 2e-5 if np.dtype(dtype) == np.float32 else 1e-12


def ce_ref(z, y):
    z = np.asarray(z, np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z - m).sum(axis=1)) + m[:, 0]
    return lse - z[np.arange(len(z)), y]


def sparsemax_loss_paper(z, q):
    """The paper's formula -<q, z> + 1/2 sum_{j in S}(z_j^2 - tau^2) + 1/2 ||q||^2 (moderate z)."""
    z = np.asarray(z, np.float64)
    out = []
    for zi, qi in zip(z, q):
        s = -np.sort(-zi)
        cs = np.cumsum(s)
        k = np.arange(1, len(zi) + 1)
        kk = (1 + k * s > cs).sum()
        tau = (cs[kk - 1] - 1) / kk
        S = zi > tau
        out.append(-qi @ zi + 0.5 * np.sum(zi[S] ** 2 - tau**2) + 0.5 * qi @ qi)
    return np.array(out)


def _fd_grad(fn, z, eps=1e-6):
    g = np.zeros_like(z)
    for idx in np.ndindex(*z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += eps
        zm[idx] -= eps
        g[idx] = (fn(zp) - fn(zm)) / (2 * eps)
    return g


# ------------------------------------------------------------------------- cross-entropy ---

@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (7, 3), (40, 17)])
def test_cross_entropy_labels(shape, dtype, n_threads, rng):
    n, c = shape
    z = (rng.standard_normal(shape) * 3).astype(dtype)
    y = rng.integers(0, c, n)
    ref = ce_ref(z, y)
    rt = _rtol(dtype)
    np.testing.assert_allclose(F.cross_entropy(z, y, reduction="none", n_threads=n_threads),
                               ref, rtol=rt, atol=rt)
    loss, g = F.cross_entropy(z, y, return_grad=True, n_threads=n_threads)
    assert isinstance(loss, float) and g.dtype == dtype and g.shape == shape
    np.testing.assert_allclose(loss, ref.mean(), rtol=rt, atol=rt)
    p = F.softmax(z.astype(np.float64))
    np.testing.assert_allclose(g, (p - np.eye(c)[y]) / n, rtol=rt * 10, atol=rt / n)
    s = F.cross_entropy(z, y, reduction="sum", n_threads=n_threads)
    np.testing.assert_allclose(s, ref.sum(), rtol=rt, atol=rt)


def test_cross_entropy_probabilities(dtype, rng):
    z = rng.standard_normal((6, 4)).astype(dtype)
    q = rng.random((6, 4))
    q /= q.sum(axis=1, keepdims=True)
    lp = F.log_softmax(z.astype(np.float64))
    ref = -(q * lp).sum(axis=1)
    rt = _rtol(dtype)
    np.testing.assert_allclose(F.cross_entropy(z, q, reduction="none"), ref, rtol=rt)
    _, g = F.cross_entropy(z, q, reduction="sum", return_grad=True)
    np.testing.assert_allclose(g, np.exp(lp) - q, rtol=rt * 10, atol=rt)
    # one-hot probability targets equal integer labels
    y = rng.integers(0, 4, 6)
    np.testing.assert_allclose(F.cross_entropy(z, np.eye(4)[y]), F.cross_entropy(z, y), rtol=rt)


def test_cross_entropy_stable_and_inf(dtype):
    z = np.array([[1e30, 0, -1e30], [-1e4, -1e4 - 1, 0], [0, -np.inf, 1]], dtype)
    l = F.cross_entropy(z, [0, 2, 2], reduction="none")
    assert np.isfinite(l).all() and (l >= 0).all()
    assert l[0] == 0
    # a zero-probability target on a -inf logit contributes 0, not NaN
    q = np.array([[0.5, 0.0, 0.5]], dtype)
    assert np.isfinite(F.cross_entropy(z[2:], q))


def test_cross_entropy_finite_differences(rng):
    z = rng.standard_normal((4, 5)) * 2
    y = rng.integers(0, 5, 4)
    q = rng.random((4, 5))
    for target in (y, q):
        for red in ("mean", "sum"):
            _, g = F.cross_entropy(z, target, reduction=red, return_grad=True)
            fd = _fd_grad(lambda a, t=target, r=red: F.cross_entropy(a, t, reduction=r), z)
            np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------- binary logistic ---

def test_binary_cross_entropy(dtype, n_threads, rng):
    z = (rng.standard_normal(50) * 5).astype(dtype)
    y = rng.integers(0, 2, 50)
    zl = z.astype(np.longdouble)
    ref = (np.logaddexp(np.longdouble(0), zl) - y * zl).astype(np.float64)
    rt = _rtol(dtype)
    np.testing.assert_allclose(F.binary_cross_entropy(z, y, reduction="none",
                                                      n_threads=n_threads), ref, rtol=rt)
    loss, g = F.binary_cross_entropy(z[:, None], y[:, None], return_grad=True)
    assert g.shape == (50, 1) and g.dtype == dtype
    np.testing.assert_allclose(loss, ref.mean(), rtol=rt)
    sig = 1 / (1 + np.exp(-z.astype(np.float64)))
    np.testing.assert_allclose(g[:, 0], (sig - y) / 50, rtol=rt * 10, atol=rt / 50)


def test_binary_cross_entropy_extremes():
    z = np.array([1000.0, -1000.0, 1000.0, -1000.0, 0.0, 40.0])
    y = np.array([1, 0, 0, 1, 0.5, 1])
    l, g = F.binary_cross_entropy(z, y, reduction="none", return_grad=True)
    np.testing.assert_allclose(l, [0, 0, 1000, 1000, np.log(2), np.log1p(np.exp(-40.0))],
                               rtol=1e-12, atol=0)
    np.testing.assert_allclose(g, [0, 0, 1, -1, 0, -np.exp(-40.0) / (1 + np.exp(-40.0))],
                               rtol=1e-12, atol=1e-300)


def test_binary_cross_entropy_finite_differences(rng):
    z = rng.standard_normal(7) * 3
    y = rng.random(7)
    _, g = F.binary_cross_entropy(z, y, return_grad=True)
    fd = _fd_grad(lambda a: F.binary_cross_entropy(a, y), z)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-10)


# ------------------------------------------------------------------------------ squared ---

@pytest.mark.parametrize("shape", [(5,), (5, 1), (6, 3)])
def test_squared_loss(shape, dtype, n_threads, rng):
    f = rng.standard_normal(shape).astype(dtype)
    y = rng.standard_normal(shape)
    d = f.astype(np.float64) - y.astype(dtype).astype(np.float64)
    ref = 0.5 * (d.reshape(shape[0], -1) ** 2).sum(axis=1)
    loss, g = F.squared_loss(f, y, reduction="sum", return_grad=True, n_threads=n_threads)
    rt = _rtol(dtype)
    np.testing.assert_allclose(loss, ref.sum(), rtol=rt)
    assert g.shape == shape and g.dtype == dtype
    np.testing.assert_allclose(g, d, rtol=rt, atol=rt)
    np.testing.assert_allclose(F.squared_loss(f, y, reduction="none"), ref, rtol=rt)


def test_squared_loss_finite_differences_and_columns(rng):
    f = rng.standard_normal((4, 3))
    y = rng.standard_normal((4, 3))
    _, g = F.squared_loss(f, y, return_grad=True)
    np.testing.assert_allclose(g, _fd_grad(lambda a: F.squared_loss(a, y), f), rtol=1e-6,
                               atol=1e-10)
    v = rng.standard_normal(5)
    assert F.squared_loss(v[:, None], v) == 0.0
    with pytest.raises(ValueError, match="shape"):
        F.squared_loss(f, y[:, :2])


# ---------------------------------------------------------------------- sparsemax loss ---

@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (9, 3), (30, 25)])
def test_sparsemax_loss_matches_paper_formula(shape, dtype, n_threads, rng):
    n, c = shape
    z = (rng.standard_normal(shape) * 2).astype(dtype)
    y = rng.integers(0, c, n)
    ref = sparsemax_loss_paper(z, np.eye(c)[y])
    rt = 1e-5 if dtype == np.float32 else 1e-12
    l = F.sparsemax_loss(z, y, reduction="none", n_threads=n_threads)
    np.testing.assert_allclose(l, ref, rtol=rt, atol=rt)
    assert (l >= 0).all()
    loss, g = F.sparsemax_loss(z, y, return_grad=True, n_threads=n_threads)
    p = F.sparsemax(z.astype(np.float64))
    np.testing.assert_allclose(g, (p - np.eye(c)[y]) / n, atol=rt)
    np.testing.assert_allclose(loss, ref.mean(), rtol=rt, atol=rt)


def test_sparsemax_loss_multilabel(dtype, rng):
    z = (rng.standard_normal((8, 6)) * 2).astype(dtype)
    Y = rng.random((8, 6)) < 0.4
    Y[np.arange(8), rng.integers(0, 6, 8)] = True  # no empty label set
    q = Y / Y.sum(axis=1, keepdims=True)
    rt = 1e-5 if dtype == np.float32 else 1e-12
    l = F.sparsemax_loss(z, Y, reduction="none")
    np.testing.assert_allclose(l, sparsemax_loss_paper(z, q), rtol=rt, atol=rt)
    assert (l >= 0).all()
    # weights are normalized: any positive multiple of a row gives the same q
    np.testing.assert_allclose(F.sparsemax_loss(z, 3.0 * Y.astype(np.float64)), F.sparsemax_loss(z, Y),
                               rtol=rt)
    _, g = F.sparsemax_loss(z, Y, reduction="sum", return_grad=True)
    np.testing.assert_allclose(g, F.sparsemax(z.astype(np.float64)) - q, atol=rt)
    # a one-hot label set equals the single-label loss
    y = rng.integers(0, 6, 8)
    np.testing.assert_allclose(F.sparsemax_loss(z, np.eye(6)[y]), F.sparsemax_loss(z, y),
                               rtol=rt)


def test_sparsemax_loss_zero_iff_margin(dtype):
    # loss == 0 exactly when z_y >= 1 + max_{j != y} z_j
    base = np.array([0.25, -1.0, 0.0, 0.125])  # exact in float32 and float64
    y = 2
    m = np.delete(base, y).max()
    for gap, zero in [(1.0, True), (1.5, True), (1.0 - 2.0**-10, False), (0.5, False)]:
        z = base.copy()
        z[y] = m + gap
        l = F.sparsemax_loss(z[None].astype(dtype), [y])
        assert (l == 0) == zero, (gap, l)
        assert l >= 0


def test_sparsemax_loss_adversarial_never_negative(dtype):
    rows = np.array([[1e6, 1e6 + 0.5, 1e6 - 3], [1e30, 0, -1e30], [2.0**53, 2.0**53 + 2, 2.0**53],
                     [0, 0, 0], [-np.inf, 0, 1], [1e-30, -1e-30, 0]], dtype)
    for y in range(3):
        l = F.sparsemax_loss(rows, np.full(len(rows), y), reduction="none")
        assert (l >= 0).all() or np.isinf(l).any()
    l = F.sparsemax_loss(rows, [1, 0, 1, 0, 2, 0], reduction="none")
    assert np.isfinite(l).all() and (l >= 0).all()
    # shift invariance at a large offset
    np.testing.assert_allclose(F.sparsemax_loss(np.array([[1e6, 1e6 + 0.5, 1e6 - 3]]), [0]),
                               F.sparsemax_loss(np.array([[0, 0.5, -3.0]]), [0]), atol=1e-9)


def test_sparsemax_loss_finite_differences(rng):
    z = rng.standard_normal((5, 6)) * 2
    y = rng.integers(0, 6, 5)
    Y = rng.random((5, 6)) < 0.5
    Y[:, 0] = True
    p = F.sparsemax(z)
    tau = (z - p)[np.arange(5), p.argmax(axis=1)]
    assert np.abs(z - tau[:, None]).min() > 1e-4  # away from kinks
    for target in (y, Y):
        _, g = F.sparsemax_loss(z, target, reduction="sum", return_grad=True)
        fd = _fd_grad(lambda a, t=target: F.sparsemax_loss(a, t, reduction="sum"), z)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


def test_nan_rows_give_nan_loss():
    z = np.array([[0.0, np.nan, 1.0], [0.0, 1.0, 2.0]])
    for fn in LOSS_FNS.values():
        l, g = fn(z, [0, 1], reduction="none", return_grad=True)
        assert np.isnan(l[0]) and np.isfinite(l[1])
        assert np.isnan(g[0]).all() and np.isfinite(g[1]).all()


# ------------------------------------------------------------------------------ common ---

@pytest.mark.parametrize("name", sorted(LOSS_FNS))
def test_reductions_grad_out_and_threads(name, dtype, rng):
    fn = LOSS_FNS[name]
    z = rng.standard_normal((300, 900)).astype(dtype)  # above PARALLEL_MIN_ELEMENTS
    assert z.size >= _kernel.PARALLEL_MIN_ELEMENTS
    y = rng.integers(0, 900, 300)
    l1, g1 = fn(z, y, return_grad=True, n_threads=1)
    l2, g2 = fn(z, y, return_grad=True, n_threads=2)
    assert l1 == l2
    np.testing.assert_array_equal(g1, g2)
    out = np.empty_like(z)
    buf = np.empty(300)
    l3, g3 = fn(z, y, grad_out=out, loss_out=buf)
    assert g3 is out and l3 == l1
    np.testing.assert_array_equal(out, g1)
    none = fn(z, y, reduction="none")
    assert none.shape == (300,) and none.dtype == np.float64
    assert fn(z, y, reduction="sum") == pytest.approx(none.sum(), rel=1e-12)
    _, gs = fn(z, y, reduction="sum", return_grad=True)
    np.testing.assert_allclose(gs / 300, g1, rtol=1e-6 if dtype == np.float32 else 1e-14)
    _, gn = fn(z, y, reduction="none", return_grad=True)
    np.testing.assert_array_equal(gn, gs)


@pytest.mark.parametrize("name", sorted(LOSS_FNS))
def test_label_errors(name):
    fn = LOSS_FNS[name]
    z = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        fn(z, [0, 1, 4])
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        fn(z, [0, -1, 2])
    with pytest.raises(ValueError, match="integer"):
        fn(z, [0, 1.5, 2])
    with pytest.raises(TypeError):
        fn(z, np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match="labels"):
        fn(z, [0, 1])
    with pytest.raises(ValueError, match="shape"):
        fn(z, np.zeros((3, 5)))
    with pytest.raises(ValueError, match="non-negative"):
        fn(z, -np.ones((3, 4)))
    with pytest.raises(ValueError, match="reduction"):
        fn(z, [0, 1, 2], reduction="avg")
    with pytest.raises(ValueError, match="grad_out"):
        fn(z, [0, 1, 2], grad_out=np.empty((4, 3)))
    with pytest.raises(TypeError, match="grad_out"):
        fn(z, [0, 1, 2], grad_out=np.empty((3, 4), np.float32))
    with pytest.raises(ValueError, match="class"):
        fn(np.zeros((3, 0)), [0, 0, 0])


def test_empty_label_set_is_an_error():
    with pytest.raises(ValueError, match="empty label set"):
        F.sparsemax_loss(np.zeros((2, 3)), np.array([[1, 0, 0], [0, 0, 0]]))


def test_empty_batch():
    z = np.zeros((0, 4))
    for fn in LOSS_FNS.values():
        assert fn(z, np.zeros(0, int), reduction="sum") == 0.0
        assert np.isnan(fn(z, np.zeros(0, int)))
        l, g = fn(z, np.zeros(0, int), reduction="none", return_grad=True)
        assert l.shape == (0,) and g.shape == (0, 4)


def test_readonly_noncontiguous_inputs(rng):
    z = rng.standard_normal((6, 10))[:, ::2]
    z0 = z.copy()
    y = rng.integers(0, 5, 6)
    ro = np.ascontiguousarray(z)
    ro.flags.writeable = False
    for fn in LOSS_FNS.values():
        assert fn(z, y) == fn(ro, y)
        np.testing.assert_array_equal(z, z0)


# ------------------------------------------------------------------------------ classes ---

@pytest.mark.parametrize("name,cls,task", [
    ("squared", losses.SquaredLoss, "regression"), ("mse", losses.SquaredLoss, "regression"),
    ("cross_entropy", losses.CrossEntropyLoss, "classification"),
    ("nll", losses.CrossEntropyLoss, "classification"),
    ("binary_cross_entropy", losses.BinaryCrossEntropyLoss, "binary"),
    ("sparsemax", losses.SparsemaxLoss, "classification"),
])
def test_get_loss(name, cls, task):
    obj = losses.get_loss(name)
    assert type(obj) is cls and obj.task == task
    assert losses.get_loss(obj) is obj
    assert losses.get_loss("sparsemax_multilabel").task == "multilabel"
    with pytest.raises(ValueError, match="Unknown loss"):
        losses.get_loss("hinge")


def test_loss_classes(dtype, rng):
    z = rng.standard_normal((12, 5)).astype(dtype)
    y = rng.integers(0, 5, 12)
    cases = [(losses.CrossEntropyLoss(), y, F.softmax(z)),
             (losses.SparsemaxLoss(), y, F.sparsemax(z)),
             (losses.SparsemaxLoss(multilabel=True), np.eye(5)[y], F.sparsemax(z)),
             (losses.SquaredLoss(), z + 1, z),
             (losses.BinaryCrossEntropyLoss(), (y > 2), None)]
    for obj, target, expected_output in cases:
        zz = z[:, :1] if isinstance(obj, losses.BinaryCrossEntropyLoss) else z
        grad = np.empty_like(zz)
        value, g = obj.loss_and_grad(zz, target, grad_out=grad)
        assert g is grad and isinstance(value, float)
        assert obj.loss(zz, target) == value
        v2, g2 = obj.loss_and_grad(zz, target)
        assert v2 == value
        np.testing.assert_array_equal(g2, grad)
        if expected_output is not None:
            np.testing.assert_array_equal(obj.output(zz), expected_output)
    b = losses.BinaryCrossEntropyLoss()
    np.testing.assert_allclose(b.output(z[:, 0]), 1 / (1 + np.exp(-z[:, 0].astype(np.float64))),
                               rtol=1e-6)


def test_loss_object_is_safe_across_threads_and_pickles_without_scratch():
    import pickle
    import threading

    from fastnn.losses import CrossEntropyLoss

    rng = np.random.default_rng(3)
    loss = CrossEntropyLoss()
    cases = [(rng.standard_normal((n, 7)), rng.integers(0, 7, n)) for n in (5, 9, 13, 17)]
    expected = [loss.loss(z, y) for z, y in cases]
    results = {}

    def work(i):
        z, y = cases[i % len(cases)]
        for _ in range(200):
            v = loss.loss(z, y)
            if v != expected[i % len(cases)]:
                results[i] = v
                return
        results[i] = None

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(v is None for v in results.values()), results
    clone = pickle.loads(pickle.dumps(loss))
    assert getattr(clone._scratch, "rows", None) is None  # scratch is not pickled
    assert clone.loss(*cases[0]) == expected[0]
