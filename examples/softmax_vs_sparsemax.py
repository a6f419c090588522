"""Softmax against sparsemax in 2-D and 3-D, as in the lecture's plots.

* Two dimensions, z = (t, 0): softmax_1(z) is the logistic sigmoid 1 / (1 + exp(-t)), and
  sparsemax_1(z) is its "hard" version, clip((t + 1) / 2, 0, 1) - exactly 0 or 1 once |t| >= 1.
* Three dimensions, z = (t1, t2, 0): softmax_1 and sparsemax_1 as surfaces over (t1, t2);
  sparsemax is piecewise linear, asymptotically like softmax, and exactly zero on a large part
  of the plane (the sparse outputs softmax never gives).

Both maps are fastnn's kernels (fastnn.functional.softmax / sparsemax). Saves
softmax_vs_sparsemax.png and exits with status 1 if any of the identities above fails.

    python examples/softmax_vs_sparsemax.py [--quick] [--out DIR]
"""
import argparse
import os
import sys

import numpy as np

import fastnn.functional as F


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="coarser surfaces (also: FASTNN_EXAMPLES_QUICK=1)")
    p.add_argument("--out", default="figures",
                   help="directory for softmax_vs_sparsemax.png (default ./figures)")
    args = p.parse_args(argv)
    args.quick = args.quick or os.environ.get("FASTNN_EXAMPLES_QUICK", "") not in ("", "0")
    return args


def main(argv=None):
    args = parse_args(argv)
    ok = True

    # --- 2-D: z = (t, 0) ------------------------------------------------------------------------
    t = np.linspace(-3.0, 3.0, 601)
    Z2 = np.column_stack([t, np.zeros_like(t)])
    soft2 = F.softmax(Z2)[:, 0]
    sparse2 = F.sparsemax(Z2)[:, 0]
    err_sigmoid = float(np.abs(soft2 - 1.0 / (1.0 + np.exp(-t))).max())
    err_hard = float(np.abs(sparse2 - np.clip((t + 1.0) / 2.0, 0.0, 1.0)).max())
    print(f"2-D: max |softmax_1 - sigmoid(t)| = {err_sigmoid:.1e}, "
          f"max |sparsemax_1 - clip((t+1)/2, 0, 1)| = {err_hard:.1e}")
    ok &= err_sigmoid < 1e-9 and err_hard < 1e-9

    # --- 3-D: z = (t1, t2, 0) -------------------------------------------------------------------
    n = 61 if args.quick else 151
    s = np.linspace(-3.0, 3.0, n)
    T1, T2 = np.meshgrid(s, s)
    Z3 = np.column_stack([T1.ravel(), T2.ravel(), np.zeros(T1.size)])
    P_soft = F.softmax(Z3)
    P_sparse = F.sparsemax(Z3)
    sums_ok = (np.abs(P_soft.sum(1) - 1).max() < 1e-9
               and np.abs(P_sparse.sum(1) - 1).max() < 1e-9 and (P_sparse >= 0).all())
    zero_soft = float((P_soft[:, 0] == 0).mean())
    zero_sparse = float((P_sparse[:, 0] == 0).mean())
    n_support = (P_sparse > 0).sum(1)
    print(f"3-D: outputs on the simplex: {'yes' if sums_ok else 'NO'}; "
          f"softmax_1 exactly 0 on {zero_soft:.0%} of the grid, sparsemax_1 on "
          f"{zero_sparse:.0%}; sparsemax support sizes 1/2/3 on "
          + "/".join(f"{(n_support == k).mean():.0%}" for k in (1, 2, 3)) + " of the grid")
    # Asymptotically alike: far from the origin both put (almost) all mass on the same winner.
    far = np.abs(Z3).max(1) >= 2.5
    same_winner = bool((P_soft[far].argmax(1) == P_sparse[far].argmax(1)).all())
    ok &= sums_ok and zero_soft == 0.0 and zero_sparse > 0.3 and same_winner

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(15, 4.6))
    ax = fig.add_subplot(1, 3, 1)
    ax.plot(t, soft2, label="softmax$_1$(t, 0) = sigmoid(t)")
    ax.plot(t, sparse2, label="sparsemax$_1$(t, 0)")
    ax.set_xlabel("t")
    ax.set_ylabel("probability of class 1")
    ax.set_title("two dimensions, z = (t, 0)")
    ax.grid(alpha=0.3)
    ax.legend()
    for k, (P, name) in enumerate(((P_soft, "softmax"), (P_sparse, "sparsemax"))):
        ax = fig.add_subplot(1, 3, k + 2, projection="3d")
        ax.plot_surface(T1, T2, P[:, 0].reshape(T1.shape), cmap="viridis", linewidth=0,
                        antialiased=True, rstride=1, cstride=1)
        ax.set_xlabel("t1")
        ax.set_ylabel("t2")
        ax.set_zlabel("probability of class 1")
        ax.set_zlim(0, 1)
        ax.set_title(f"{name}$_1$(t1, t2, 0)")
        ax.view_init(elev=25, azim=-125)
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "softmax_vs_sparsemax.png")
    fig.savefig(path, dpi=90)
    print(f"saved {path}")
    print(f"identities hold: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
