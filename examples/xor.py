"""XOR: a hand-set two-layer threshold network, and a trained MLP.

1. The lecture's Example 3.6 (Figures 3.11-3.12): with the bipolar encoding (-1, +1),

       z1 = sgn(1 - x1 + x2),   z2 = sgn(-1 - x1 + x2),   y = sgn(1 - z1 + z2),

   a 2-2-1 network of McCulloch-Pitts units (fastnn "sign" activation, hand-set weights)
   computes y = x1 XOR x2; its two hidden units are the two discriminant lines of Fig. 3.12.
2. The same problem learned by backpropagation: a 2-8-2 tanh MLP trained with Adam on noisy
   points of the four XOR quadrants (the playground's XOR data), then checked on the four
   corners of the truth table and on fresh test points.
3. For contrast, a single linear unit (logistic regression) trained the same way: it cannot
   get more than 3 of the 4 corners right (Minsky and Papert's point).

Saves xor.png (decision regions of the three) and exits with status 1 if the threshold network
or the trained MLP does not compute XOR.

    python examples/xor.py [--quick] [--out DIR]
"""
import argparse
import os
import sys

import numpy as np

from fastnn import Dense, Sequential, datasets


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="fewer epochs (also: FASTNN_EXAMPLES_QUICK=1)")
    p.add_argument("--out", default="figures", help="directory for xor.png (default ./figures)")
    args = p.parse_args(argv)
    args.quick = args.quick or os.environ.get("FASTNN_EXAMPLES_QUICK", "") not in ("", "0")
    return args


def threshold_xor():
    """The lecture's 2-2-1 threshold network for XOR (bipolar inputs and output)."""
    hidden = Dense(2, 2, activation="sign", dtype=np.float64)
    hidden.weight.data[:] = [[-1.0, -1.0],   # x1 -> z1, z2
                             [1.0, 1.0]]     # x2 -> z1, z2
    hidden.bias.data[:] = [1.0, -1.0]
    out = Dense(2, 1, activation="sign", dtype=np.float64)
    out.weight.data[:, 0] = [-1.0, 1.0]      # z1, z2 -> y
    out.bias.data[0] = 1.0
    return Sequential(hidden, out)


def main(argv=None):
    args = parse_args(argv)
    ok = True

    # --- 1. hand-set threshold network ----------------------------------------------------------
    net = threshold_xor()
    corners = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    z = net[0](corners).copy()
    y = net.predict(corners)[:, 0]
    print("threshold network, bipolar encoding (y = x1 XOR x2):")
    print("   x1  x2 |  z1  z2 |  y")
    for x, zi, yi in zip(corners, z, y):
        want = 1.0 if (x[0] > 0) != (x[1] > 0) else -1.0
        ok &= bool(yi == want)
        print(f"  {int(x[0]):>3} {int(x[1]):>3} | {int(zi[0]):>3} {int(zi[1]):>3} | "
              f"{int(yi):>2}  {'ok' if yi == want else 'WRONG'}")
    print(f"threshold network computes XOR: {'yes' if ok else 'NO'}")

    # --- 2. trained MLP ---------------------------------------------------------------------------
    X, labels = datasets.make_xor(200 if args.quick else 400, noise=0.05, seed=0)
    X_test, y_test = datasets.make_xor(1000, seed=1)
    mlp = Sequential(Dense(2, 8, activation="tanh", seed=0), Dense(8, 2, seed=1))
    mlp.fit(X, labels, loss="cross_entropy", optimizer="adam", lr=0.03,
            epochs=60 if args.quick else 200, batch_size=32, verbose=0, seed=0)
    # The truth table's corners, mapped to the data's [-1, 1] square: 0 -> -0.5, 1 -> +0.5.
    X01, y01 = datasets.make_xor()
    corner_pred = np.argmax(mlp.predict(X01 - 0.5), axis=1)
    test_acc = mlp.evaluate(X_test, y_test)["accuracy"]
    mlp_ok = bool(np.array_equal(corner_pred, y01)) and test_acc >= 0.9
    print(f"trained 2-8-2 tanh MLP: corners {corner_pred.tolist()} (want {y01.tolist()}), "
          f"test accuracy {test_acc:.3f}: {'solved' if mlp_ok else 'NOT solved'}")
    ok &= mlp_ok

    # --- 3. one linear unit -----------------------------------------------------------------------
    linear = Sequential(Dense(2, 2, seed=0))
    linear.fit(X, labels, loss="cross_entropy", optimizer="adam", lr=0.03,
               epochs=60 if args.quick else 200, batch_size=32, verbose=0, seed=0)
    lin_corners = int((np.argmax(linear.predict(X01 - 0.5), axis=1) == y01).sum())
    lin_acc = linear.evaluate(X_test, y_test)["accuracy"]
    print(f"single linear unit: {lin_corners}/4 corners, test accuracy {lin_acc:.3f} "
          f"(a line cannot separate XOR)")

    # --- figure -----------------------------------------------------------------------------------
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = np.linspace(-1.5, 1.5, 301)
    gx, gy = np.meshgrid(g, g)
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.3))
    ax = axes[0]
    ax.contourf(gx, gy, net.predict(grid)[:, 0].reshape(gx.shape), levels=[-2, 0, 2],
                colors=["#9ecae1", "#fdae6b"])
    t = np.array([-1.5, 1.5])
    ax.plot(t, t - 1.0, "k--", lw=1, label="z1: 1 - x1 + x2 = 0")
    ax.plot(t, t + 1.0, "k:", lw=1, label="z2: -1 - x1 + x2 = 0")
    cls = (corners[:, 0] > 0) != (corners[:, 1] > 0)
    ax.scatter(*corners[~cls].T, c="#08519c", s=90, edgecolors="k", label="XOR false")
    ax.scatter(*corners[cls].T, c="#d94801", s=90, edgecolors="k", label="XOR true")
    ax.set_title("hand-set threshold network (sign units)")
    ax.legend(loc="lower right", fontsize=7)
    for ax, model, name in ((axes[1], mlp, f"trained 2-8-2 tanh MLP (test acc {test_acc:.2f})"),
                            (axes[2], linear, f"one linear unit (test acc {lin_acc:.2f})")):
        p1 = model.predict_proba(grid.astype(np.float32))[:, 1].reshape(gx.shape)
        ax.contourf(gx, gy, p1, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.8)
        ax.contour(gx, gy, p1, levels=[0.5], colors="k", linewidths=1)
        ax.scatter(X[:, 0], X[:, 1], c=labels, cmap="RdBu_r", s=8, edgecolors="k",
                   linewidths=0.3)
        ax.set_title(name)
    for ax in axes:
        ax.set_xlim(-1.5, 1.5)
        ax.set_ylim(-1.5, 1.5)
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
        ax.set_aspect("equal")
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "xor.png")
    fig.savefig(path, dpi=100)
    print(f"saved {path}")

    print(f"XOR solved: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
