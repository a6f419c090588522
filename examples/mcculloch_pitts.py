"""The McCulloch-Pitts threshold unit: y = x2 AND (x1 OR NOT x3).

Reproduces the lecture's Example 3.2 (Table 3.6): one threshold unit with hand-set weights,

    v = -2 + 2 x1 + 4 x2 - x3,    y = sgn(v),

on the bipolar encoding (-1 false, +1 true), written as a fastnn ``Dense`` layer with the
"sign" activation. The same unit on the 0/1 encoding uses the "step" activation (1 if v >= 0)
with the weights rewritten for x = (x_bipolar + 1) / 2.

Prints the truth table (x1, x2, x3, v, y) and exits with status 1 if any row differs from the
lecture's table or from the logical formula. No figure: a truth table is for reading.

    python examples/mcculloch_pitts.py
"""
import argparse
import itertools
import sys

import numpy as np

import fastnn

# Table 3.6 of the lecture, row by row: x1, x2, x3, v, y.
LECTURE_TABLE = [
    (-1, -1, -1, -7, -1),
    (-1, -1, 1, -9, -1),
    (-1, 1, -1, 1, 1),
    (-1, 1, 1, -1, -1),
    (1, -1, -1, -3, -1),
    (1, -1, 1, -5, -1),
    (1, 1, -1, 5, 1),
    (1, 1, 1, 3, 1),
]


def threshold_unit(weights, bias, activation):
    """One McCulloch-Pitts unit: a 3 -> 1 Dense layer with hand-set weights."""
    unit = fastnn.Dense(3, 1, activation=activation, dtype=np.float64)
    unit.weight.data[:, 0] = weights
    unit.bias.data[0] = bias
    return unit


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="accepted for uniformity (the "
                        "example is instant either way)")
    parser.add_argument("--out", default=None, help="unused: this example draws no figure")
    parser.parse_args(argv)

    # Bipolar inputs, rows in the lecture's order (x1 slowest).
    X = np.array(list(itertools.product([-1.0, 1.0], repeat=3)))
    w, b = np.array([2.0, 4.0, -1.0]), -2.0

    # The pre-activation v (identity unit) and the output y = sgn(v) (sign unit), both by fastnn.
    v = threshold_unit(w, b, "identity")(X)[:, 0]
    y = threshold_unit(w, b, "sign")(X)[:, 0]

    truth = np.array([x2 > 0 and (x1 > 0 or not x3 > 0) for x1, x2, x3 in X])
    print("y = x2 AND (x1 OR NOT x3) with one threshold unit, v = -2 + 2 x1 + 4 x2 - x3, "
          "y = sgn(v)")
    print(f"{'x1':>3} {'x2':>3} {'x3':>3} {'v':>4} {'y':>3}   lecture (v, y)")
    ok = True
    for row, vi, yi, ti, ref in zip(X, v, y, truth, LECTURE_TABLE):
        match = (tuple(int(t) for t in row) == ref[:3] and vi == ref[3] and yi == ref[4]
                 and (yi > 0) == ti)
        ok &= match
        print(f"{int(row[0]):>3} {int(row[1]):>3} {int(row[2]):>3} {int(vi):>4} {int(yi):>3}"
              f"   ({ref[3]:>2}, {ref[4]:>2}) {'ok' if match else 'MISMATCH'}")

    # The same unit on 0/1 inputs: x_bip = 2 x - 1 gives v = -7 + 4 x1 + 8 x2 - 2 x3 (odd, never
    # 0, so step(v) = [v >= 0] agrees with sgn(v) = +1 exactly where the formula is true).
    X01 = (X + 1.0) / 2.0
    y01 = threshold_unit(2.0 * w, b - w.sum(), "step")(X01)[:, 0]
    step_ok = bool(np.array_equal(y01, truth.astype(np.float64)))
    print(f"0/1 encoding with the step activation (v = -7 + 4 x1 + 8 x2 - 2 x3): "
          f"{'matches the truth table' if step_ok else 'MISMATCH'}")

    if ok and step_ok:
        print("truth table reproduced: yes")
        return 0
    print("truth table reproduced: NO", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
