"""The playground's two spirals with 1, 2 and 4 hidden layers, tanh against relu.

The lecture's playground slides (playground.tensorflow.org): a complex target - two
interleaved spirals - is out of reach of one hidden layer, and deeper relu networks carve it
out. Here every network has 8 units per hidden layer (the playground's maximum), is trained
with Adam (lr 0.01, batch 32) for the same number of epochs, and is shown with its decision
boundary.

Saves spirals.png (a 2 x 3 grid: tanh / relu by 1, 2, 4 hidden layers) and exits with status
1 unless the best 4-hidden-layer network fits the spirals (training accuracy >= 0.95) and is
clearly better (by >= 0.1) than the best 1-hidden-layer network.

    python examples/spirals.py [--quick] [--out DIR]
"""
import argparse
import os
import sys

import numpy as np

from fastnn import Dense, Sequential, datasets

DEPTHS = (1, 2, 4)
ACTIVATIONS = ("tanh", "relu")
WIDTH = 8


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="fewer epochs (also: FASTNN_EXAMPLES_QUICK=1)")
    p.add_argument("--out", default="figures", help="directory for spirals.png (default ./figures)")
    args = p.parse_args(argv)
    args.quick = args.quick or os.environ.get("FASTNN_EXAMPLES_QUICK", "") not in ("", "0")
    return args


def mlp(depth, activation, seed=0):
    """2 -> WIDTH x depth (activation) -> 2 logits."""
    layers = [Dense(2, WIDTH, activation=activation, seed=seed)]
    layers += [Dense(WIDTH, WIDTH, activation=activation, seed=seed + i + 1)
               for i in range(depth - 1)]
    layers.append(Dense(WIDTH, 2, seed=seed + depth))
    return Sequential(*layers)


def main(argv=None):
    args = parse_args(argv)
    epochs = 150 if args.quick else 400
    X, y = datasets.make_spirals(400, noise=0.03, seed=0)
    X_test, y_test = datasets.make_spirals(400, noise=0.03, seed=1)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = np.linspace(-1.2, 1.2, 241, dtype=np.float32)
    gx, gy = np.meshgrid(g, g)
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    fig, axes = plt.subplots(len(ACTIVATIONS), len(DEPTHS), figsize=(12, 8.2))
    acc = {}
    for i, act in enumerate(ACTIVATIONS):
        for j, depth in enumerate(DEPTHS):
            model = mlp(depth, act)
            model.fit(X, y, loss="cross_entropy", optimizer="adam", lr=0.01, epochs=epochs,
                      batch_size=32, verbose=0, seed=0)
            train_acc = model.evaluate(X, y)["accuracy"]
            test_acc = model.evaluate(X_test, y_test)["accuracy"]
            acc[act, depth] = train_acc
            print(f"{depth} hidden layer(s) of {WIDTH} {act:<4}: training accuracy "
                  f"{train_acc:.3f}, test accuracy {test_acc:.3f}")
            p1 = model.predict_proba(grid)[:, 1].reshape(gx.shape)
            ax = axes[i, j]
            ax.contourf(gx, gy, p1, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.75)
            ax.contour(gx, gy, p1, levels=[0.5], colors="k", linewidths=0.8)
            ax.scatter(X[:, 0], X[:, 1], c=y, cmap="RdBu_r", s=7, edgecolors="k",
                       linewidths=0.3)
            ax.set_title(f"{depth} x {WIDTH} {act}: train {train_acc:.2f}, test {test_acc:.2f}",
                         fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("x1")
            ax.set_ylabel("x2")
            ax.set_aspect("equal")
    fig.suptitle(f"two spirals, {epochs} epochs of Adam for every network")
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "spirals.png")
    fig.savefig(path, dpi=90)
    print(f"saved {path}")

    deep = max(acc[a, DEPTHS[-1]] for a in ACTIVATIONS)
    shallow = max(acc[a, DEPTHS[0]] for a in ACTIVATIONS)
    ok = deep >= 0.95 and deep - shallow >= 0.1
    print(f"depth helps: {'yes' if ok else 'NO'} (best {DEPTHS[-1]}-layer {deep:.3f}, "
          f"best 1-layer {shallow:.3f})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
