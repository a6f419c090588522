"""Counting the linear regions of small relu networks: depth against width.

A relu network is piecewise linear; each pattern of active units is one linear region (a convex
polytope: with the pattern fixed, every pre-activation is an affine function of the input).
Montufar et al. (2014): with D inputs, depth L and K units per layer the number of regions can
reach the order of (K/D)^(D(L-1)) K^D - exponential in depth - while one hidden layer of K
units has at most K + 1 pieces along a line and sum_{i<=D} C(K, i) regions in D dimensions.

This example counts regions by evaluating the networks with fastnn and collecting each
sample's activation pattern:

* 1-D, along [0, 1]: the "sawtooth" construction, each hidden layer two relu units computing
  the tent map t(x) = 2 relu(x) - 4 relu(x - 1/2); L layers (2L units) give 2^L pieces, where
  one hidden layer of the same 2L units gives at most 2L + 1.
* 2-D, on [0, 1]^2: the same tent map on each coordinate (4 units per layer): 4^L regions,
  against at most 1 + K + K(K-1)/2 for one layer of K = 4L units.
* Random networks (He-initialized weights, N(0, 0.5^2) biases) with the same 24 hidden units
  arranged as 1 x 24, 2 x 12, 3 x 8, 4 x 6, 6 x 4, counted along a line: at initialization depth
  does not multiply the count (Hanin and Rolnick, 2019) - the exponential number is what depth
  can express, not what a random deep network shows.

Saves linear_regions.png and exits with status 1 if a count disagrees with the theory above.

    python examples/linear_regions.py [--quick] [--out DIR]
"""
import argparse
import os
import sys
from math import comb

import numpy as np

from fastnn import Dense, Sequential


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="shallower constructions, coarser grids (also: FASTNN_EXAMPLES_QUICK=1)")
    p.add_argument("--out", default="figures",
                   help="directory for linear_regions.png (default ./figures)")
    args = p.parse_args(argv)
    args.quick = args.quick or os.environ.get("FASTNN_EXAMPLES_QUICK", "") not in ("", "0")
    return args


def dense(in_features, out_features, weight, bias, activation="relu"):
    layer = Dense(in_features, out_features, activation=activation, dtype=np.float64)
    layer.weight.data[:] = weight
    layer.bias.data[:] = bias
    return layer


def sawtooth(depth, dims=1):
    """Tent map on each of ``dims`` coordinates, composed ``depth`` times (2 units/coordinate).

    Units (relu(x_i), relu(x_i - 1/2)) per coordinate; the next layer reads
    t(x_i) = 2 relu(x_i) - 4 relu(x_i - 1/2).
    """
    eye = np.eye(dims)
    first_w = np.kron(eye, [[1.0, 1.0]])                  # x_i -> both units of coordinate i
    next_w = np.kron(eye, [[2.0, 2.0], [-4.0, -4.0]])     # t(x_i) -> both units again
    bias = np.tile([0.0, -0.5], dims)
    layers = [dense(dims, 2 * dims, first_w, bias)]
    layers += [dense(2 * dims, 2 * dims, next_w, bias) for _ in range(depth - 1)]
    layers.append(dense(2 * dims, dims, np.kron(eye, [[2.0], [-4.0]]), np.zeros(dims),
                        activation="identity"))
    return Sequential(*layers)


def random_relu_net(in_features, widths, seed):
    rng = np.random.default_rng(seed)
    layers, n_in = [], in_features
    for i, w in enumerate(widths):
        layer = Dense(n_in, w, activation="relu", seed=seed * 100 + i, dtype=np.float64)
        layer.bias.data[:] = rng.normal(0.0, 0.5, w)
        layers.append(layer)
        n_in = w
    layers.append(Dense(n_in, 1, seed=seed * 100 + 99, dtype=np.float64))
    return Sequential(*layers)


def activation_patterns(model, X):
    """(n_samples, n_hidden_units) bool: which relu units are active at each sample."""
    masks, h = [], X
    for layer in model:
        h = layer(h)
        if layer.activation == "relu":
            masks.append(h > 0)
    return np.concatenate(masks, axis=1)


def pieces_along(model, x):
    """Linear pieces met along sorted samples x (n, D): pattern changes + 1."""
    pat = activation_patterns(model, x)
    return int(np.any(pat[1:] != pat[:-1], axis=1).sum()) + 1


def regions_on(model, X):
    """Distinct activation patterns among the samples X (regions the samples hit)."""
    return len(np.unique(np.packbits(activation_patterns(model, X), axis=1), axis=0))


def main(argv=None):
    args = parse_args(argv)
    ok = True
    # Samples off the dyadic points where the tent maps have their kinks.
    n_line = 5003 if args.quick else 40009
    t = (np.arange(n_line) + 0.5 * np.sqrt(2.0)) / n_line
    x1 = t.reshape(-1, 1)

    # --- 1-D: sawtooth against one layer ---------------------------------------------------------
    depths = range(1, 7 if args.quick else 9)
    deep_pieces = {}
    for L in depths:
        deep_pieces[L] = pieces_along(sawtooth(L), x1)
        good = deep_pieces[L] == 2 ** L
        ok &= good
        print(f"1-D sawtooth, {L} layer(s) x 2 units: {deep_pieces[L]:>4} pieces "
              f"(theory 2^{L} = {2 ** L}; one layer of {2 * L} units: at most {2 * L + 1})"
              + ("" if good else "  MISMATCH"))

    # --- 2-D: tent map on each coordinate ----------------------------------------------------
    n_grid = 160 if args.quick else 400
    g = (np.arange(n_grid) + 0.5 * np.sqrt(2.0)) / n_grid
    GX, GY = np.meshgrid(g, g)
    X2 = np.column_stack([GX.ravel(), GY.ravel()])
    depths2 = range(1, 4 if args.quick else 6)
    deep_regions = {}
    for L in depths2:
        deep_regions[L] = regions_on(sawtooth(L, dims=2), X2)
        K = 4 * L
        good = deep_regions[L] == 4 ** L
        ok &= good
        print(f"2-D sawtooth, {L} layer(s) x 4 units: {deep_regions[L]:>4} regions "
              f"(theory 4^{L} = {4 ** L}; one layer of {K} units: at most "
              f"{1 + K + comb(K, 2)})" + ("" if good else "  MISMATCH"))

    # --- random networks with 24 hidden units ------------------------------------------------------
    shapes = [(24,), (12, 12), (8, 8, 8), (6, 6, 6, 6), (4,) * 6]
    seeds = range(3 if args.quick else 10)
    xr = (2.0 * t - 1.0).reshape(-1, 1)      # the line [-1, 1]
    random_pieces = {}
    for widths in shapes:
        counts = [pieces_along(random_relu_net(1, widths, s), xr) for s in seeds]
        random_pieces[widths] = counts
        print(f"random {len(widths)} x {widths[0]:>2} relu net on [-1, 1]: "
              f"{np.mean(counts):5.1f} pieces on average (min {min(counts)}, max {max(counts)})")
    ok &= max(random_pieces[(24,)]) <= 25    # one layer of 24 units: at most 25 pieces

    # --- figure --------------------------------------------------------------------------------
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    ax = axes[0]
    for L in (1, 2, 3):
        ax.plot(t, sawtooth(L).predict(x1)[:, 0], lw=1.2, label=f"depth {L}: {2 ** L} pieces")
    ax.set_xlabel("x")
    ax.set_ylabel("network output")
    ax.set_title("sawtooth: the tent map composed L times")
    ax.legend(fontsize=8, loc="lower right")

    ax = axes[1]
    Ls = np.array(list(depths))
    ax.plot(2 * Ls, [deep_pieces[L] for L in Ls], "o-", label="deep: L layers x 2 units")
    ax.plot(2 * Ls, 2 * Ls + 1, "s--", label="one layer of 2L units (max)")
    ax.set_yscale("log", base=2)
    ax.set_xlabel("hidden units")
    ax.set_ylabel("linear pieces along [0, 1]")
    ax.set_title("1-D: depth is exponential, width linear")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)

    ax = axes[2]
    L = 3
    pat = activation_patterns(sawtooth(L, dims=2), X2)
    _, ids = np.unique(np.packbits(pat, axis=1), axis=0, return_inverse=True)
    perm = np.random.default_rng(0).permutation(ids.max() + 1)
    ax.imshow(perm[ids.ravel()].reshape(GX.shape), origin="lower", extent=(0, 1, 0, 1),
              cmap="nipy_spectral", interpolation="nearest")
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.set_title(f"2-D sawtooth, {L} layers x 4 units: {4 ** L} regions")

    ax = axes[3]
    depth_axis = [len(w) for w in shapes]
    ax.boxplot([random_pieces[w] for w in shapes], positions=depth_axis, widths=0.4)
    ax.set_xticks(depth_axis, [f"{len(w)}x{w[0]}" for w in shapes])
    ax.axhline(25, color="gray", ls=":", lw=0.8, label="one layer of 24: at most 25")
    ax.set_xlabel("depth x width (24 hidden units)")
    ax.set_ylabel("linear pieces along [-1, 1]")
    ax.set_title("random initialization")
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "linear_regions.png")
    fig.savefig(path, dpi=90)
    print(f"saved {path}")
    print(f"region counts match the theory: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
