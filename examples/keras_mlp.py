"""The lecture's Keras MLP, written with fastnn.

The lecture's "Some Code in Keras (Multi-Layer Perceptron)" slide builds a 20-64-64-10 network
with tanh units, dropout 0.5 after each hidden layer, a softmax output, uniform initialization,
and trains it with SGD (lr 0.1, decay 1e-6, momentum 0.9, Nesterov) on the categorical
cross-entropy for 20 epochs in batches of 16. The same model in fastnn::

    model = Sequential(Dense(20, 64, activation="tanh", init=uniform), Dropout(0.5),
                       Dense(64, 64, activation="tanh", init=uniform), Dropout(0.5),
                       Dense(64, 10, init=uniform))        # softmax lives in the loss
    sgd = optim.SGD(model.parameters(), lr=0.1, decay=1e-6, momentum=0.9, nesterov=True)
    model.fit(X_train, y_train, loss="cross_entropy", optimizer=sgd, epochs=20, batch_size=16)
    model.evaluate(X_test, y_test)

Keras' example trains on random data: uniform features and random labels, which carry nothing
to learn, so the honest test accuracy is chance (about 0.10). It is reported as such, and next
to it the same model on data with something to learn: the same kind of 20 uniform features,
labelled by a random linear "teacher" (y = argmax of x W + b for a fixed random W, b).

On the teacher's data the slide's recipe does not learn: with dropout 0.5, lr 0.1 and Nesterov
momentum 0.9 (an effective step of about 1) the training loss climbs from 2.2 to about 4.5
within a few epochs and stays there; PyTorch with the same recipe and initialization does the
same. With lr 0.01 (everything else unchanged) the model learns. Both runs are shown.

Saves keras_mlp.png (learning curves) and exits with status 1 if the random-label test accuracy
is not at chance level (< 0.2: anything above would be a leak) or the teacher's labels are not
learned with lr 0.01 (test accuracy < 0.5).

    python examples/keras_mlp.py [--quick] [--out DIR]
"""
import argparse
import os
import sys

import numpy as np

from fastnn import Dense, Dropout, Sequential, optim


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="accepted for uniformity: the example runs in about a second "
                        "(also: FASTNN_EXAMPLES_QUICK=1)")
    p.add_argument("--out", default="figures",
                   help="directory for keras_mlp.png (default ./figures)")
    args = p.parse_args(argv)
    args.quick = args.quick or os.environ.get("FASTNN_EXAMPLES_QUICK", "") not in ("", "0")
    return args


def uniform(shape, seed=None, dtype=np.float32):
    """Keras 1's init='uniform': U(-0.05, 0.05)."""
    return np.random.default_rng(seed).uniform(-0.05, 0.05, shape).astype(dtype)


def keras_mlp(seed=0):
    return Sequential(
        Dense(20, 64, activation="tanh", init=uniform, seed=seed),
        Dropout(0.5, seed=seed + 1),
        Dense(64, 64, activation="tanh", init=uniform, seed=seed + 2),
        Dropout(0.5, seed=seed + 3),
        Dense(64, 10, init=uniform, seed=seed + 4),
    )


def train(X_train, y_train, X_test, y_test, lr=0.1, seed=0):
    model = keras_mlp(seed)
    sgd = optim.SGD(model.parameters(), lr=lr, decay=1e-6, momentum=0.9, nesterov=True)
    history = model.fit(X_train, y_train, loss="cross_entropy", optimizer=sgd, epochs=20,
                        batch_size=16, validation_data=(X_test, y_test), verbose=0, seed=seed)
    return model, history, model.evaluate(X_test, y_test)


def main(argv=None):
    args = parse_args(argv)
    rng = np.random.default_rng(0)
    n_train, n_test = 1000, 1000   # Keras' example tests on 100 rows; 1000 make chance visible

    # Keras' data: np.random.random((1000, 20)) and random integer labels in 0..9.
    X_train = rng.random((n_train, 20)).astype(np.float32)
    X_test = rng.random((n_test, 20)).astype(np.float32)
    y_train = rng.integers(0, 10, n_train)
    y_test = rng.integers(0, 10, n_test)
    _, hist_random, res_random = train(X_train, y_train, X_test, y_test)
    print(f"random labels (Keras' example): training accuracy "
          f"{hist_random['accuracy'][-1]:.3f}, test accuracy {res_random['accuracy']:.3f} "
          f"(chance is 0.10: there is nothing to learn)")

    # The same features labelled by a random linear teacher.
    W, b = rng.normal(size=(20, 10)), rng.normal(scale=0.5, size=10)
    t_train = np.argmax((X_train - 0.5) @ W + b, axis=1)
    t_test = np.argmax((X_test - 0.5) @ W + b, axis=1)
    majority = np.bincount(t_test).max() / n_test
    _, hist_teacher, res_teacher = train(X_train, t_train, X_test, t_test)
    print(f"teacher labels, lr 0.1: training loss {hist_teacher['loss'][0]:.2f} -> "
          f"{hist_teacher['loss'][-1]:.2f}, test accuracy {res_teacher['accuracy']:.3f} "
          f"(majority class {majority:.2f}): the slide's step is too large here")
    _, hist_small, res_small = train(X_train, t_train, X_test, t_test, lr=0.01)
    print(f"teacher labels, lr 0.01: training loss {hist_small['loss'][0]:.2f} -> "
          f"{hist_small['loss'][-1]:.2f}, test accuracy {res_small['accuracy']:.3f}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = np.arange(1, 21)
    for hist, name, color in ((hist_random, "random labels, lr 0.1", "C0"),
                              (hist_teacher, "teacher, lr 0.1", "C3"),
                              (hist_small, "teacher, lr 0.01", "C2")):
        axes[0].plot(epochs, hist["loss"], "-", color=color, label=f"{name}, training")
        axes[0].plot(epochs, hist["val_loss"], "--", color=color, label=f"{name}, test")
        axes[1].plot(epochs, hist["accuracy"], "-", color=color, label=f"{name}, training")
        axes[1].plot(epochs, hist["val_accuracy"], "--", color=color, label=f"{name}, test")
    axes[1].axhline(0.1, color="gray", lw=0.8, ls=":", label="chance")
    axes[0].set_ylabel("cross-entropy")
    axes[1].set_ylabel("accuracy")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("the lecture's Keras MLP in fastnn: 20-64-64-10 tanh, dropout 0.5, "
                 "SGD + Nesterov, batch 16")
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "keras_mlp.png")
    fig.savefig(path, dpi=100)
    print(f"saved {path}")

    ok = res_random["accuracy"] < 0.2 and res_small["accuracy"] >= 0.5
    print(f"honest accuracy (chance on random labels, teacher learned with lr 0.01): "
          f"{'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
