"""Maxout against ReLU on the playground's two spirals, at the same number of parameters.

The lecture's "max-pooling over units": a maxout unit outputs the max of k linear units, a
learned convex piecewise-linear activation (Goodfellow et al., 2013); ReLU is the special case
max(z, 0). Here a ReLU network and maxout networks with k = 2 and k = 4 pieces (two hidden
layers each) get the same parameter budget - the maxout networks have fewer, wider-in-pieces
units - and the same training (Adam, lr 0.01, batch 32, the same epochs). Each is shown with its
decision boundary.

Saves maxout_spirals.png (one panel per network) and exits with status 1 unless every network
fits the spirals (training accuracy >= 0.95) and the maxout networks' test accuracy is within
0.05 of the ReLU network's (or better).

    python examples/maxout_spirals.py [--quick] [--out DIR]
"""
import argparse
import os
import sys

import numpy as np

from fastnn import Dense, Maxout, Sequential, datasets


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 600 epochs take about two seconds; 400 left the k = 4 network at 0.93 training accuracy
    # with some BLAS kernels (its trajectory depends on the products' rounding)
    p.add_argument("--quick", action="store_true",
                   help="accepted for the examples' common interface; the run is already "
                        "short (also: FASTNN_EXAMPLES_QUICK=1)")
    p.add_argument("--out", default="figures",
                   help="directory for maxout_spirals.png (default ./figures)")
    args = p.parse_args(argv)
    args.quick = args.quick or os.environ.get("FASTNN_EXAMPLES_QUICK", "") not in ("", "0")
    return args


def relu_net(width, seed=0):
    return Sequential(Dense(2, width, activation="relu", seed=seed),
                      Dense(width, width, activation="relu", seed=seed + 1),
                      Dense(width, 2, seed=seed + 2))


def maxout_net(width, pieces, seed=0):
    return Sequential(Maxout(2, width, pieces=pieces, seed=seed),
                      Maxout(width, width, pieces=pieces, seed=seed + 1),
                      Dense(width, 2, seed=seed + 2))


def n_params(model):
    return sum(p.data.size for p in model.parameters())


def width_for_budget(budget, pieces):
    """The largest maxout width whose two-layer network fits in ``budget`` parameters."""
    width = 1
    while n_params(maxout_net(width + 1, pieces)) <= budget:
        width += 1
    return width


def main(argv=None):
    args = parse_args(argv)
    epochs = 600
    X, y = datasets.make_spirals(400, noise=0.03, seed=0)
    X_test, y_test = datasets.make_spirals(400, noise=0.03, seed=1)

    relu_width = 32
    budget = n_params(relu_net(relu_width))
    nets = [(f"ReLU, {relu_width} units", relu_net(relu_width))]
    for k in (2, 4):
        w = width_for_budget(budget, k)
        nets.append((f"maxout k={k}, {w} units", maxout_net(w, k)))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = np.linspace(-1.2, 1.2, 241, dtype=np.float32)
    gx, gy = np.meshgrid(g, g)
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    fig, axes = plt.subplots(1, len(nets), figsize=(4.2 * len(nets), 4.6))
    scores = []
    for ax, (label, model) in zip(axes, nets):
        model.fit(X, y, loss="cross_entropy", optimizer="adam", lr=0.01, epochs=epochs,
                  batch_size=32, verbose=0, seed=0)
        train_acc = model.evaluate(X, y)["accuracy"]
        test_acc = model.evaluate(X_test, y_test)["accuracy"]
        scores.append((train_acc, test_acc))
        print(f"{label:<22} {n_params(model):5d} parameters: training accuracy "
              f"{train_acc:.3f}, test accuracy {test_acc:.3f}")
        p1 = model.predict_proba(grid)[:, 1].reshape(gx.shape)
        ax.contourf(gx, gy, p1, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.75)
        ax.contour(gx, gy, p1, levels=[0.5], colors="k", linewidths=0.8)
        ax.scatter(X[:, 0], X[:, 1], c=y, cmap="RdBu_r", s=7, edgecolors="k", linewidths=0.3)
        ax.set_title(f"{label} ({n_params(model)} params)\ntrain {train_acc:.2f}, "
                     f"test {test_acc:.2f}", fontsize=10)
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        ax.set_aspect("equal")
    fig.suptitle(f"two spirals, two hidden layers, {epochs} epochs of Adam, "
                 f"~{budget} parameters each")
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "maxout_spirals.png")
    fig.savefig(path, dpi=90)
    print(f"saved {path}")

    relu_test = scores[0][1]
    ok = all(tr >= 0.95 for tr, _ in scores) and all(te >= relu_test - 0.05
                                                      for _, te in scores[1:])
    print(f"maxout matches relu: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
