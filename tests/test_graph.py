"""The functional graph API: Input, layers called on nodes, merges, Model (several inputs and
outputs, a shared layer, skip connections), fit/evaluate/predict, gradcheck, save/load, and the
errors found when the graph is built."""
import numpy as np
import pytest

import fastnn
from fastnn import (Add, Concatenate, Dense, Dropout, Input, Model, Multiply, Sequential,
                    gradcheck)


def _digits_halves():
    X, y = fastnn.datasets.load_digits()
    X = (X / 16.0).astype(np.float32)
    top, bottom = np.ascontiguousarray(X[:, :32]), np.ascontiguousarray(X[:, 32:])
    ink = X.sum(axis=1, keepdims=True)                   # a regression target: the ink,
    ink = (ink - ink.mean()) / ink.std()                 # standardized
    return top, bottom, y, ink.astype(np.float32)


def two_by_two(dtype=np.float32, seed=0):
    """Two inputs (the digits' top and bottom halves), one layer shared by both, a skip
    connection, two outputs (the digit; the mean ink)."""
    a, b = Input(32, name="top"), Input(32, name="bottom")
    shared = Dense(32, 48, activation="relu", seed=seed, dtype=dtype)
    h = Concatenate()([shared(a), shared(b)])
    h = Add()([h, Dense(96, 96, activation="tanh", seed=seed + 1, dtype=dtype)(h)])
    return Model([a, b], [Dense(96, 10, seed=seed + 2, dtype=dtype)(h),
                          Dense(96, 1, seed=seed + 3, dtype=dtype)(h)])


def test_two_inputs_two_outputs_shared_layer_skip_on_real_data(tmp_path):
    top, bottom, y, ink = _digits_halves()
    n_train = 1400
    model = two_by_two()
    # the shared layer's parameters are held once
    assert model.n_parameters() == (32 * 48 + 48) + (96 * 96 + 96) + (96 * 10 + 10) + 97
    hist = model.fit([top[:n_train], bottom[:n_train]], [y[:n_train], ink[:n_train]],
                     loss=["cross_entropy", "squared"], loss_weights=[1.0, 1.0], epochs=40,
                     batch_size=32, seed=0, verbose=0,
                     validation_data=({"top": top[n_train:], "bottom": bottom[n_train:]},
                                      [y[n_train:], ink[n_train:]]))
    assert hist.history["loss"][-1] < 0.2 * hist.history["loss"][0]
    assert "val_loss" in hist.history
    res = model.evaluate([top[n_train:], bottom[n_train:]], [y[n_train:], ink[n_train:]])
    assert res["accuracy_0"] > 0.9, res
    assert res["loss_1"] < 0.05, res         # 1/2 mean error^2 of a unit-variance target

    # save and reload: bitwise the same outputs, and training continues from the same state
    fastnn.save(model, tmp_path / "graph.npz")
    again = fastnn.load(tmp_path / "graph.npz")
    assert isinstance(again, Model) and again.input_names == ["top", "bottom"]
    for u, v in zip(model.predict([top, bottom]), again.predict([top, bottom])):
        np.testing.assert_array_equal(u, v)
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), again.named_parameters()):
        assert n1 == n2
        np.testing.assert_array_equal(p1.data, p2.data)


def test_gradcheck_of_the_whole_graph():
    rng = np.random.default_rng(0)
    Xa, Xb = rng.standard_normal((10, 32)), rng.standard_normal((10, 32))
    y1, y2 = rng.integers(0, 10, 10), rng.standard_normal((10, 1))
    model = two_by_two(np.float64)
    res = gradcheck(model, [Xa, Xb], [y1, y2], ["cross_entropy", "squared"],
                    loss_weights=[1.0, 0.5], check_input=True, max_coords=60)
    assert res.passed, res
    # a wrong backward is caught: the second use of the shared layer drops its gradients
    broken = two_by_two(np.float64)
    clone = broken._clones[0]
    clone.backward = lambda g, need=True, inplace=False: np.zeros((g.shape[0], 32))
    res = gradcheck(broken, [Xa, Xb], [y1, y2], ["cross_entropy", "squared"], max_coords=30)
    assert not res.passed


def test_merges_against_numpy():
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((4, 3)) for _ in range(3)]
    np.testing.assert_array_equal(Concatenate().forward(xs), np.concatenate(xs, axis=1))
    np.testing.assert_array_equal(Add().forward(xs), xs[0] + xs[1] + xs[2])
    np.testing.assert_allclose(Multiply().forward(xs), xs[0] * xs[1] * xs[2])
    m = Multiply()
    m.forward(xs)
    g = rng.standard_normal((4, 3))
    gs = m.backward(g)
    np.testing.assert_allclose(gs[1], g * xs[0] * xs[2])
    assert len({id(a) for a in gs}) == 3          # distinct arrays, safe to overwrite
    add = Add()
    add.forward(xs)
    gs = add.backward(g)
    assert len({id(a) for a in gs}) == 3 and all(np.array_equal(a, g) for a in gs)


def test_one_input_one_output_graph_equals_sequential(same_rows):
    X, y = fastnn.datasets.make_spirals(200, seed=0)
    X = X.astype(np.float32)

    def layers():
        return [Dense(2, 16, activation="tanh", seed=0), Dense(16, 16, activation="relu", seed=1),
                Dense(16, 2, seed=2)]

    seq = Sequential(*layers())
    la = layers()
    x = Input(2)
    h = x
    for layer in la:
        h = layer(h)
    graph = Model(x, h)
    np.testing.assert_array_equal(graph.forward(X), seq.forward(X))
    seq.fit(X, y, loss="cross_entropy", epochs=3, seed=0, verbose=0)
    graph.fit(X, y, loss="cross_entropy", epochs=3, seed=0, verbose=0)
    same_rows(graph.predict(X), seq.predict(X))   # (Sequential: one call, in tiles)


def test_a_sequential_and_dropout_inside_a_graph():
    x = Input(4)
    body = Sequential(Dense(4, 8, activation="relu", seed=0), Dropout(0.5, seed=1),
                      Dense(8, 3, seed=2))
    model = Model(x, body(x))
    X = np.random.default_rng(2).standard_normal((6, 4)).astype(np.float32)
    model.eval()
    np.testing.assert_array_equal(model.forward(X), body.forward(X))
    model.train()
    assert body[1].training


def test_build_time_errors():
    a, b = Input(3, name="a"), Input(4, name="b")
    with pytest.raises(ValueError, match="expects 3 input features, got 4"):
        Dense(3, 2)(b)
    with pytest.raises(ValueError, match="equal width"):
        Add()([a, b])
    with pytest.raises(ValueError, match="takes a list"):
        Add()(a)
    with pytest.raises(ValueError, match="at least 2"):
        Concatenate()([a])
    with pytest.raises(ValueError, match="takes one node"):
        Dense(3, 2)([a, a])
    out = Dense(3, 2)(a)
    with pytest.raises(ValueError, match="not used by any output"):
        Model([a, b], out)
    with pytest.raises(ValueError, match="not in inputs"):
        Model(b, Concatenate()([out, b]))
    with pytest.raises(ValueError, match="listed twice"):
        Model([a, a], out)
    with pytest.raises(ValueError, match="must be Input nodes"):
        Model(out, out)
    with pytest.raises(ValueError, match="unique"):
        Model([Input(3, name="x"), Input(3, name="x")], Add()([a, a]))
    with pytest.raises(TypeError, match="must be a node"):
        Model([], out)
    with pytest.raises(ValueError, match="positive int"):
        Input(0)
    # a cycle cannot be built through the API; one made by hand is still refused
    h1 = Dense(3, 3)(a)
    h2 = Dense(3, 3)(h1)
    object.__setattr__(h1, "parents", (h2,))
    with pytest.raises(ValueError, match="cycle|not in inputs|not used"):
        Model(a, h2)


def test_run_time_input_errors():
    a, b = Input(3, name="a"), Input(2, name="b")
    model = Model([a, b], Concatenate()([Dense(3, 2)(a), b]))
    xa, xb = np.zeros((5, 3), np.float32), np.zeros((5, 2), np.float32)
    assert model.forward([xa, xb]).shape == (5, 4)
    assert model.forward({"b": xb, "a": xa}).shape == (5, 4)
    with pytest.raises(ValueError, match="2 inputs, got 1"):
        model.forward([xa])
    with pytest.raises(ValueError, match=r"input 'b' must have shape \(n, 2\)"):
        model.forward([xa, xa])
    with pytest.raises(TypeError, match="float32"):
        model.forward([xa.astype(np.float64), xb])
    with pytest.raises(ValueError, match="inputs by name"):
        model.forward({"a": xa})
    with pytest.raises(ValueError, match="different numbers of rows"):
        model.forward([xa, xb[:4]])
    with pytest.raises(ValueError, match="one loss per output"):
        model.fit([xa, xb], [np.zeros(5)], loss=["squared", "squared"])
    with pytest.raises(ValueError, match="loss_weights"):
        model.fit([xa, xb], np.zeros((5, 4)), loss="squared", loss_weights=[-1.0])
    with pytest.raises(ValueError, match="class labels"):
        Model(a, Dense(3, 2)(a)).fit(xa, np.array([0, 1, 2, 0, 1]), loss="cross_entropy",
                                     verbose=0)


def test_shared_layer_uses_do_not_overwrite_each_other():
    """The second use of a shared layer runs on its own buffers: the first use's output is
    intact after the second forward (a single Dense would have overwritten it)."""
    a, b = Input(3), Input(3)
    shared = Dense(3, 3, seed=0, dtype=np.float64)
    model = Model([a, b], [shared(a), shared(b)])
    xa, xb = np.eye(3), 2 * np.eye(3)
    ya, yb = model.forward([xa, xb])
    np.testing.assert_allclose(ya, xa @ shared.weight.data + shared.bias.data)
    np.testing.assert_allclose(yb, xb @ shared.weight.data + shared.bias.data)
    model.zero_grad()
    model.backward([np.ones((3, 3)), np.ones((3, 3))], need_input_grad=False)
    # dL/dW = xa^T 1 + xb^T 1: both uses add into the one gradient
    np.testing.assert_allclose(shared.weight.grad, (xa + xb).T @ np.ones((3, 3)))
    np.testing.assert_allclose(shared.bias.grad, np.full(3, 6.0))


def _edit_description(src, dst, edit):
    """Copy a model file with its JSON description edited (arrays untouched)."""
    import io
    import json
    import zipfile
    with zipfile.ZipFile(src) as z:
        members = [(i.filename, z.read(i)) for i in z.infolist()]
    out = []
    for name, data in members:
        if name == "__fastnn__.npy":
            meta = json.loads(np.load(io.BytesIO(data)).tobytes())
            edit(meta)
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.frombuffer(json.dumps(meta).encode(), np.uint8))
            data = buf.getvalue()
        out.append((name, data))
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in out:
            z.writestr(name, data)


@pytest.mark.parametrize("edit,match", [
    # a maxout layer declared 2*10^7 units wide: refused from the description, not allocated
    (lambda m: m["architecture"]["layers"][0].__setitem__("out_features", 2 * 10 ** 7),
     "the architecture needs"),
    (lambda m: m["architecture"]["nodes"][2].__setitem__("parents", [-1]), "earlier nodes"),
    (lambda m: m["architecture"]["nodes"][2].__setitem__("layer", 99), "layer index"),
    (lambda m: m["architecture"].__setitem__("outputs", [1000]), "index nodes"),
    (lambda m: m["architecture"]["nodes"][1].__setitem__("features", 5), "width"),
])
def test_hostile_graph_descriptions_are_model_file_errors(tmp_path, edit, match):
    import tracemalloc
    x = Input(4)
    model = Model(x, Dense(6, 2, seed=1)(fastnn.Maxout(4, 6, pieces=3, seed=0)(x)))
    fastnn.save(model, tmp_path / "ok.npz")
    _edit_description(tmp_path / "ok.npz", tmp_path / "bad.npz", edit)
    tracemalloc.start()
    try:
        with pytest.raises(fastnn.ModelFileError, match=match):
            fastnn.load(tmp_path / "bad.npz")
        assert tracemalloc.get_traced_memory()[1] < 20 * 2 ** 20
    finally:
        tracemalloc.stop()
