"""bfloat16 kernels (fastnn/_kernels/_bf16.pxd): rounding, packing, one-row product, GEMM.

References are NumPy: bfloat16 rounding by uint32 bit arithmetic, products in float64 from the
rounded operands. Tolerance of a product y = sum_i x_i w_i over k terms (x, w the bfloat16
values, every product exact in float32): each column is summed in float32 with at most k + 1
roundings in sequence (two partial sums of the pairs, or one chain, each pair one or two
additions, and the final addition), so |y - y64| <= (k + 1) u / (1 - (k + 1) u) sum |x_i w_i|,
u = 2^-24; the tests allow (k + 2) u sum |x_i w_i| (inputs without subnormals, whose products
the AVX512-BF16 instruction may flush).
"""
import numpy as np
import pytest

from fastnn._kernels import bf16

LEVELS = [name for i, name in enumerate(bf16.SIMD_LEVELS) if i <= bf16._supported_level()]
U = 2.0 ** -24


@pytest.fixture
def level():
    old = bf16.simd_level()
    yield
    bf16._set_simd_level(old)


def ref_bits(a):
    """bfloat16 bits of float32 a: to nearest, ties to even; NaN -> quiet NaN, sign kept."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
    q = (u >> 16) | 0x40
    return np.where((u & 0x7FFFFFFF) > 0x7F800000, q, r).astype(np.uint16)


def to_f(h):
    return (np.asarray(h, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def ref_pack(W):
    k, n = W.shape
    kp2, npan = (k + 1) // 2, (n + 15) // 16
    B = np.zeros((2 * kp2, 16 * npan), dtype=np.uint16)
    B[:k, :n] = ref_bits(W)
    # (kp, t, p, j) -> (p, kp, j, t)
    return B.reshape(kp2, 2, npan, 16).transpose(2, 0, 3, 1).ravel()


EDGE_BITS = np.array([
    0x00000000, 0x80000000,              # +-0
    0x7F800000, 0xFF800000,              # +-inf
    0x7FC00000, 0xFFC00000, 0x7F800001,  # NaNs (a signaling one with only a low bit set)
    0x7FFFFFFF, 0xFF800001, 0x7F80FFFF,
    0x7F7FFFFF, 0xFF7FFFFF,              # largest float32: rounds to +-inf
    0x7F7F7FFF, 0x7F7F8000, 0x7F7E8000,  # below a tie; ties to even: up to inf, down
    0x3F808000, 0x3F818000, 0x3F808001,  # ties to even (down, up), above the tie
    0x00000001, 0x00008000, 0x00018000,  # subnormals: to 0, tie to 0, tie up to even
    0x007FFFFF, 0x807FFFFF, 0x00008001,  # largest subnormal rounds to the smallest normal
    0x3F800000, 0xBF7FFFFF, 0x4B000000,
], dtype=np.uint32)


def test_levels():
    assert bf16.simd_level() in bf16.SIMD_LEVELS
    assert bf16.SIMD_LEVELS.index(bf16.simd_level()) <= bf16._supported_level()
    with pytest.raises(ValueError):
        bf16._set_simd_level("avx1024")


def test_round_edges():
    a = EDGE_BITS.view(np.float32)
    got = bf16.round_bits(a)
    np.testing.assert_array_equal(got, ref_bits(a))
    f = to_f(got)
    nan = np.isnan(a)
    assert np.isnan(f[nan]).all()
    np.testing.assert_array_equal(np.signbit(f[nan]), np.signbit(a[nan]))
    assert (got[nan] & 0x40).all()                          # quiet
    assert np.isinf(f[[10, 11]]).all() and f[10] > 0 > f[11]
    assert got[1] == 0x8000                                 # -0.0 kept
    assert got[12] == 0x7F7F and got[13] == 0x7F80 and got[14] == 0x7F7E
    assert got[15] == 0x3F80 and got[16] == 0x3F82 and got[17] == 0x3F81
    assert got[18] == 0 and got[19] == 0 and got[20] == 2
    assert got[21] == 0x0080 and got[22] == 0x8080 and got[23] == 1


@pytest.mark.parametrize("name", LEVELS)
def test_round_random_bits(name, level):
    bf16._set_simd_level(name)
    rng = np.random.default_rng(1)
    a = np.concatenate([rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32),
                        EDGE_BITS]).view(np.float32)
    want = ref_bits(a)
    np.testing.assert_array_equal(bf16.round_bits(a), want)
    row = bf16.round_row(a)                                 # the level's vector code
    assert row.shape == (a.size + 1,) and row[-1] == 0      # odd k: padded
    np.testing.assert_array_equal(row[:-1], want)
    np.testing.assert_array_equal(bf16.round_row(a[:-1]), want[:-1])


SIZES = [0, 1, 2, 15, 16, 17, 31, 33, 64, 65]


@pytest.mark.parametrize("k", SIZES)
def test_pack(k):
    rng = np.random.default_rng(k)
    for n in SIZES:
        W = rng.standard_normal((k, n)).astype(np.float32)
        P = bf16.pack(W)
        assert P.dtype == np.uint16 and P.shape == (bf16.packed_len(k, n),)
        assert P.size == ((n + 15) // 16) * ((k + 1) // 2) * 32
        assert P.size == 0 or P.ctypes.data % 64 == 0   # one cache line per weight vector
        np.testing.assert_array_equal(P, ref_pack(W))
    # rows with a stride: a column slice of a wider matrix
    big = rng.standard_normal((k, 50)).astype(np.float32)
    np.testing.assert_array_equal(bf16.pack(big[:, 3:36]), ref_pack(big[:, 3:36]))


def test_pack_special_values():
    a = EDGE_BITS.view(np.float32)
    W = np.resize(a, (9, 19)).astype(np.float32)
    np.testing.assert_array_equal(bf16.pack(W), ref_pack(W))


def ref_product(X, W):
    """float64 product of the bfloat16-rounded operands, and sum |x_i w_i| per output."""
    Xr = to_f(ref_bits(X)).astype(np.float64)
    Wr = to_f(ref_bits(W)).astype(np.float64)
    return Xr @ Wr, np.abs(Xr) @ np.abs(Wr)


def check(y, want, mag, k):
    tol = (k + 2) * U * mag + 1e-37
    err = np.abs(y.astype(np.float64) - want)
    assert (err <= tol).all(), (err - tol).max()


@pytest.mark.parametrize("name", LEVELS)
def test_xw(name, level):
    bf16._set_simd_level(name)
    rng = np.random.default_rng(2)
    for k in SIZES + [100, 784]:
        for n in SIZES + [10, 100, 256]:
            W = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
            x = rng.standard_normal(k).astype(np.float32)
            P = bf16.pack(W)
            y = bf16.xw(x, P, n)
            assert y.dtype == np.float32 and y.shape == (n,)
            want, mag = ref_product(x[None, :], W)
            check(y, want[0], mag[0], k)


@pytest.mark.parametrize("name", LEVELS)
def test_gemm(name, level):
    bf16._set_simd_level(name)
    rng = np.random.default_rng(3)
    for k in [0, 1, 15, 16, 17, 31, 33, 100]:
        for n in [0, 1, 15, 16, 17, 31, 32, 33, 48, 65]:
            for m in [1, 11, 12, 13, 25]:
                W = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
                X = rng.standard_normal((m, k)).astype(np.float32)
                C = bf16.gemm(X, bf16.pack(W), n)
                assert C.dtype == np.float32 and C.shape == (m, n)
                want, mag = ref_product(X, W)
                check(C, want, mag, k)
    # rows with a stride
    Xb = rng.standard_normal((30, 90)).astype(np.float32)
    W = rng.standard_normal((33, 40)).astype(np.float32)
    C = bf16.gemm(Xb[:, 5:38], bf16.pack(W), 40)
    want, mag = ref_product(Xb[:, 5:38], W)
    check(C, want, mag, 33)


def ref_xw_bits(x, W):
    """The one-row product below avx512bf16, bit for bit: per column a float32 sum of the even
    rows' products and one of the odd rows' (each in row order, every product exact in
    float32), added at the end."""
    xr, Wr = to_f(ref_bits(x)), to_f(ref_bits(W))
    se = np.zeros(W.shape[1], dtype=np.float32)
    so = np.zeros(W.shape[1], dtype=np.float32)
    for i in range(0, len(x), 2):
        se = se + xr[i] * Wr[i]
        if i + 1 < len(x):
            so = so + xr[i + 1] * Wr[i + 1]
    return se + so


@pytest.mark.parametrize("k, n, m", [(201, 77, 29), (200, 100, 3), (33, 273, 13),
                                     (17, 250, 5), (1, 129, 2), (64, 112, 12)])
def test_levels_agree(k, n, m, level):
    """Levels below avx512bf16 give the same bits as each other (exact products, the same
    summation orders) and as that order summed by NumPy, whatever number of panels each level
    takes at a time (5 to 18 panels); avx512bf16, and a row's GEMM against its one-row
    product, agree within the tolerance."""
    rng = np.random.default_rng(4)
    W = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    X = rng.standard_normal((m, k)).astype(np.float32)
    P = bf16.pack(W)
    want, mag = ref_product(X, W)
    out = {}
    for name in LEVELS:
        bf16._set_simd_level(name)
        out[name] = (np.stack([bf16.xw(X[i], P, n) for i in range(m)]), bf16.gemm(X, P, n))
    bits = np.stack([ref_xw_bits(X[i], W) for i in range(m)])
    for name, (rows, C) in out.items():
        check(rows, want, mag, k)
        check(C, want, mag, k)
        if name != "avx512bf16":
            np.testing.assert_array_equal(rows, bits)
            np.testing.assert_array_equal(rows, out["baseline"][0])
            np.testing.assert_array_equal(C, out["baseline"][1])


@pytest.mark.parametrize("name", LEVELS)
def test_nan_inf(name, level):
    bf16._set_simd_level(name)
    rng = np.random.default_rng(5)
    k, n = 40, 35
    W = rng.standard_normal((k, n)).astype(np.float32)
    x = rng.standard_normal(k).astype(np.float32)
    x[7] = np.nan
    assert np.isnan(bf16.xw(x, bf16.pack(W), n)).all()
    assert np.isnan(bf16.gemm(np.stack([x] * 13), bf16.pack(W), n)).all()
    x[7] = 1.0
    W[5, 3] = np.inf
    x[5] = 2.0
    y = bf16.xw(x, bf16.pack(W), n)
    assert y[3] == np.inf and np.isfinite(np.delete(y, 3)).all()
    C = bf16.gemm(np.stack([x] * 13), bf16.pack(W), n)
    assert (C[:, 3] == np.inf).all() and np.isfinite(np.delete(C, 3, axis=1)).all()


def test_bad_arguments():
    P = bf16.pack(np.ones((4, 5), np.float32))
    with pytest.raises(ValueError):
        bf16.xw(np.ones(5, np.float32), P, 5)
    with pytest.raises(ValueError):
        bf16.gemm(np.ones((2, 4), np.float32), P, 17)


# --- one-call inference with bfloat16 products ----------------------------------------------

from fastnn import Sequential  # noqa: E402
from fastnn._kernels import inference as _k  # noqa: E402
from fastnn.functional import inference as I  # noqa: E402
from fastnn.layers import Dense, Dropout, Maxout, Softmax  # noqa: E402


def net(seed=0, dtype=np.float32):
    return Sequential(Dense(30, 64, "tanh"), Dropout(0.2, mode="standard"), Dense(64, 48, "relu"),
                      Maxout(48, 20, 2), Dense(20, 7), dtype=dtype, seed=seed)


def bf16_layer_path(model, X):
    """The network module by module in evaluation mode, from a copy whose weights are rounded
    to bfloat16, each Dense/Maxout input rounded too: the bfloat16 plan's numbers up to the
    order of the float32 sums."""
    m2 = model.copy()
    for m in m2.modules():
        if type(m) is Dense:
            m.weight.data[...] = to_f(ref_bits(m.weight.data)).reshape(m.weight.data.shape)
    h = np.ascontiguousarray(X)
    for m in m2.modules():
        m.training = False
    for layer in m2:
        if type(layer) in (Dense, Maxout):
            h = to_f(ref_bits(h)).reshape(h.shape)
        h = layer.forward(h)
    return np.array(h, copy=True)


@pytest.mark.parametrize("name", LEVELS)
def test_predict_bfloat16(name, level):
    bf16._set_simd_level(name)
    model = net()
    for n in (1, 2, 7, 33, 300):
        X = np.random.default_rng(n).standard_normal((n, 30)).astype(np.float32)
        got = model.predict(X, precision="bfloat16")
        want = bf16_layer_path(model, X)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
        exact = model.predict(X)   # the float32 network: bfloat16 is about 1e-2 away
        assert np.abs(got - exact).max() < 5e-2 * np.abs(exact).max()
        np.testing.assert_array_equal(model.predict(X, precision="float32"), exact)
    assert I.plan_for(model, "bfloat16").precision == "bfloat16"
    assert I.plan_for(model).precision == "float32"


def test_predict_bfloat16_threads_batches_proba():
    old = _k.set_parallel_min_work(0)
    try:
        model = net(seed=3)
        X = np.random.default_rng(0).standard_normal((1234, 30)).astype(np.float32)
        outs = []
        for t in (1, 2, 3):
            model.n_threads = t
            outs.append(model.predict(X, precision="bfloat16"))
        for o in outs[1:]:
            np.testing.assert_array_equal(o, outs[0])
        # batches through plan.run, a strided input, a list
        np.testing.assert_array_equal(model.predict(X, batch_size=1234, precision="bfloat16"),
                                      outs[0])
        Xs = np.asfortranarray(X)
        np.testing.assert_array_equal(model.predict(Xs, precision="bfloat16"), outs[0])
        model.loss = None
        p = model.predict_proba(X, loss="cross_entropy", precision="bfloat16")
        from fastnn.losses import get_loss
        np.testing.assert_allclose(p, get_loss("cross_entropy").output(outs[0]), rtol=1e-6,
                                   atol=1e-7)
        p2 = model.predict_proba(X, loss="cross_entropy", batch_size=100, precision="bfloat16")
        np.testing.assert_allclose(p2, p, rtol=1e-6, atol=1e-7)
    finally:
        _k.set_parallel_min_work(old)


def test_predict_bfloat16_errors():
    X = np.zeros((3, 30), np.float32)
    with pytest.raises(ValueError):
        net().predict(X, precision="float16")
    with pytest.raises(ValueError):
        net(dtype=np.float64).predict(X.astype(np.float64), precision="bfloat16")
    with pytest.raises(ValueError):
        net().predict(X, precision="float64")
    # a network one-call inference does not cover
    class OwnDense(Dense):   # a user-written layer
        pass

    with pytest.raises(ValueError, match="not covered"):
        Sequential(Dense(30, 30), OwnDense(30, 30), dtype=np.float32).predict(
            X, precision="bfloat16")
    with pytest.raises(ValueError):
        _k.InferencePlan([(0, 0, 2, 2, 1, 1.0, np.zeros((2, 2)), None)], np.float64,
                         precision="bfloat16")


def test_bfloat16_copy_follows_the_weights():
    model = net(seed=5)
    X = np.random.default_rng(1).standard_normal((50, 30)).astype(np.float32)
    before = model.predict(X, precision="bfloat16")
    other = net(seed=6)
    model.load_state_dict(other.state_dict())           # in place: the copy is dropped
    np.testing.assert_array_equal(model.predict(X, precision="bfloat16"),
                                  other.predict(X, precision="bfloat16"))
    assert np.abs(model.predict(X, precision="bfloat16") - before).max() > 0
    # a fit changes the weights in place: the copy is made again
    y = np.random.default_rng(2).standard_normal((50, 7)).astype(np.float32)
    model.fit(X, y, loss="squared", epochs=1, batch_size=10, verbose=0)
    np.testing.assert_allclose(model.predict(X, precision="bfloat16"), bf16_layer_path(model, X),
                               rtol=0, atol=1e-4 * np.abs(model.predict(X)).max())
    # other in-place changes: refresh_copies
    w = model[0].weight.data
    w *= 2
    I.refresh_copies(model)
    np.testing.assert_allclose(model.predict(X, precision="bfloat16"), bf16_layer_path(model, X),
                               rtol=0, atol=1e-4 * np.abs(model.predict(X)).max())


def test_level_reaches_the_plans(level):
    model = net(seed=7)
    X = np.random.default_rng(3).standard_normal((40, 30)).astype(np.float32)
    outs = {}
    for name in LEVELS:
        bf16._set_simd_level(name)
        I.refresh_copies(model)
        outs[name] = (model.predict(X, precision="bfloat16"),
                      model.predict(X[:1], precision="bfloat16"))
    for name, (o, o1) in outs.items():
        if name != "avx512bf16":   # the same bits below AVX512-BF16
            np.testing.assert_array_equal(o, outs["baseline"][0])
            np.testing.assert_array_equal(o1, outs["baseline"][1])
    bf16._set_simd_level("baseline")
    assert _k._set_bf16_level(0) == 0      # the plans' kernels follow bf16._set_simd_level


def test_graph_model_bfloat16():
    """A graph Model (two inputs, a branch, a concatenation) takes the bfloat16 products as a
    Sequential does: against a NumPy reference with the weights and each dense layer's input
    rounded to bfloat16; bitwise the same for any thread count; errors as Sequential's."""
    from fastnn.graph import Concatenate, Input, Model

    def rb(x):
        x = np.ascontiguousarray(x, np.float32)
        return to_f(ref_bits(x)).reshape(x.shape).astype(np.float64)

    def build(dtype=np.float32):
        a, b = Input(30), Input(5)
        h = Dense(30, 40, "relu", seed=1, dtype=dtype)(a)
        u = Dense(40, 16, "tanh", seed=2, dtype=dtype)(h)
        v = Dense(5, 16, seed=3, dtype=dtype)(b)
        return Model([a, b], Dense(32, 6, seed=4, dtype=dtype)(Concatenate()([u, v])))

    model = build()
    d1, d2, d3, d4 = [m for m in model.modules() if type(m) is Dense]
    rng = np.random.default_rng(0)
    for n in (1, 2, 33, 500):
        xa = rng.standard_normal((n, 30)).astype(np.float32)
        xb = rng.standard_normal((n, 5)).astype(np.float32)

        def lin(x, d):
            return rb(x) @ rb(d.weight.data) + d.bias.data

        h = np.maximum(lin(xa, d1), 0)
        want = lin(np.hstack([np.tanh(lin(h, d2)), lin(xb, d3)]), d4)
        got = model.predict([xa, xb], precision="bfloat16")
        assert got.dtype == np.float32 and got.shape == (n, 6)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
        outs = []
        for t in (1, 3):
            model.n_threads = t
            outs.append(model.predict({"input_0": xa, "input_1": xb}, precision="bfloat16"))
        np.testing.assert_array_equal(outs[0], outs[1])
        np.testing.assert_array_equal(outs[0], got)
        batched = model.predict([xa, xb], batch_size=16, precision="bfloat16")
        np.testing.assert_allclose(batched, got, rtol=0, atol=1e-5 * np.abs(want).max())
        exact = model.predict([xa, xb])
        assert np.abs(got - exact).max() < 5e-2 * np.abs(exact).max()
    with pytest.raises(ValueError):
        build(np.float64).predict([xa.astype(np.float64), xb.astype(np.float64)],
                                  precision="bfloat16")
    with pytest.raises(ValueError):
        model.predict([xa, xb], precision="half")


def test_bfloat16_copy_follows_optimizer_steps():
    """A training loop by hand (forward, backward, optimizer step) changes the weights in
    place: the next bfloat16 predict copies them again, for predict and predict_proba."""
    from fastnn import optim
    from fastnn.losses import get_loss
    model = net(seed=2)
    X = np.random.default_rng(4).standard_normal((40, 30)).astype(np.float32)
    y = np.arange(40) % 7
    before = model.predict(X, precision="bfloat16")
    p_before = model.predict_proba(X, loss="cross_entropy", precision="bfloat16")
    opt = optim.Adam(model.parameters(), lr=0.05)
    loss = get_loss("cross_entropy")
    model.train()
    z = model.forward(X)
    model.backward(loss.loss_and_grad(z, y)[1])
    opt.step()
    model.eval()
    after = model.predict(X, precision="bfloat16")
    assert not np.array_equal(after, before)
    np.testing.assert_array_equal(after, bf16_predict_fresh(model, X))
    p_after = model.predict_proba(X, loss="cross_entropy", precision="bfloat16")
    assert not np.array_equal(p_after, p_before)
    np.testing.assert_allclose(p_after, loss.output(after), rtol=1e-6, atol=1e-7)


def bf16_predict_fresh(model, X):
    """The bfloat16 prediction of a copy of the network (a plan built from its weights now)."""
    return model.copy().predict(X, precision="bfloat16")


def test_bfloat16_copy_follows_reset_parameters():
    model = net(seed=7)
    X = np.random.default_rng(2).standard_normal((20, 30)).astype(np.float32)
    before = model.predict(X, precision="bfloat16")
    model[0].reset_parameters(seed=99)   # in place
    after = model.predict(X, precision="bfloat16")
    assert not np.array_equal(after, before)
    np.testing.assert_array_equal(after, bf16_predict_fresh(model, X))
