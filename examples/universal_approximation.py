"""Universal approximation: one hidden layer fitting a 1-D function as the width grows.

Hornik et al. (1989): a network with a single hidden layer of tanh units and a linear output
unit approximates any continuous function on a compact set arbitrarily well, given enough
hidden units. Here the 1-K-1 networks, K = 1, 2, 4, ..., 64, are trained with the squared loss
and Adam on f(x) = sin(2 pi x) + 0.5 sin(5 pi x) on [-1, 1], and the test error falls as K
grows.

Initialization: with Glorot's init every tanh unit switches near x = 0 with a gentle slope, and
Adam takes thousands of epochs to move them apart. Like the constructive proofs of the theorem,
the hidden units here start as steep steps spread over the interval (slope ~ +-8, centers
uniform in [-1, 1]); training then adjusts all weights.

Saves universal_approximation.png (the fits, and the test error against the width) and exits
with status 1 if the widest network does not fit the function (test MSE >= 0.01) or is not at
least 100 times better than one unit.

    python examples/universal_approximation.py [--quick] [--out DIR]
"""
import argparse
import os
import sys

import numpy as np

from fastnn import Dense, Sequential, datasets

WIDTHS = (1, 2, 4, 8, 16, 32, 64)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="fewer epochs (also: FASTNN_EXAMPLES_QUICK=1)")
    p.add_argument("--out", default="figures",
                   help="directory for universal_approximation.png (default ./figures)")
    args = p.parse_args(argv)
    args.quick = args.quick or os.environ.get("FASTNN_EXAMPLES_QUICK", "") not in ("", "0")
    return args


def one_hidden_layer(width, seed, slope=8.0, low=-1.0, high=1.0):
    """1 -> width (tanh) -> 1 network whose hidden steps are spread over [low, high]."""
    rng = np.random.default_rng(seed)
    hidden = Dense(1, width, activation="tanh", seed=seed)
    w = slope * rng.choice([-1.0, 1.0], width) * rng.uniform(0.5, 1.5, width)
    centers = rng.uniform(low, high, width)
    hidden.weight.data[0] = w
    hidden.bias.data[:] = -w * centers      # unit k switches at x = centers[k]
    return Sequential(hidden, Dense(width, 1, seed=seed + 1))


def main(argv=None):
    args = parse_args(argv)
    epochs = 100 if args.quick else 300
    X, y = datasets.make_regression_1d(256, function="wave", seed=0)
    X_test, y_test = datasets.make_regression_1d(512, function="wave", seed=1)

    fits, errors = {}, {}
    for k in WIDTHS:
        model = one_hidden_layer(k, seed=k)
        model.fit(X, y, loss="squared", optimizer="adam", lr=0.01, epochs=epochs,
                  batch_size=32, verbose=0, seed=0)
        errors[k] = float(np.mean((model.predict(X_test) - y_test) ** 2))
        fits[k] = model.predict(X_test)[:, 0]
        print(f"width {k:>3}: test MSE {errors[k]:.5f}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_err) = plt.subplots(1, 2, figsize=(12, 4.2),
                                     gridspec_kw={"width_ratios": [1.6, 1]})
    xs = X_test[:, 0]
    ax.plot(xs, y_test[:, 0], "k-", lw=3, alpha=0.3, label="f(x)")
    cmap = plt.get_cmap("viridis")
    for i, k in enumerate(WIDTHS):
        ax.plot(xs, fits[k], color=cmap(i / (len(WIDTHS) - 1)), lw=1.2, label=f"{k} units")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title("one hidden layer of tanh units, trained (Adam, squared loss)")
    ax.legend(fontsize=8, ncol=2)
    ax_err.loglog(list(errors), list(errors.values()), "o-")
    ax_err.set_xscale("log", base=2)
    ax_err.set_xlabel("hidden units")
    ax_err.set_ylabel("test MSE")
    ax_err.set_title("error against width")
    ax_err.grid(alpha=0.3, which="both")
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "universal_approximation.png")
    fig.savefig(path, dpi=100)
    print(f"saved {path}")

    widest, narrowest = errors[WIDTHS[-1]], errors[WIDTHS[0]]
    ok = widest < 0.01 and widest * 100 < narrowest
    print(f"error falls with width: {'yes' if ok else 'NO'} "
          f"({WIDTHS[0]} unit: {narrowest:.4f}, {WIDTHS[-1]} units: {widest:.5f})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
