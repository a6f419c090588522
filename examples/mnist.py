"""MNIST with a learning curve.

A 784-256-128-10 relu MLP trained with Adam on MNIST's 60,000 training images (5,000 of them
held out for validation), evaluated on the 10,000 test images; the learning curves (loss and
accuracy, training and validation, per epoch) go to mnist.png.

The data are read from IDX files (gzipped or not): the directory given as argument, else
$FASTNN_MNIST_DIR, else fastnn's download cache. Nothing is downloaded unless you ask
(--download). Without the files the example says so and exits with status 0 (skipped).

Quick mode (--quick or FASTNN_EXAMPLES_QUICK=1) trains on 6,000 images for 3 epochs and tests
on 2,000. Exits with status 1 if the test accuracy is below 0.97 (0.85 in quick mode).

    python examples/mnist.py [MNIST_DIR] [--quick] [--out DIR] [--download]
"""
import argparse
import os
import sys
import time

from fastnn import Dense, Sequential, datasets
from fastnn.data import train_test_split


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mnist_dir", nargs="?", default=None,
                   help="directory with the four MNIST IDX files (default: $FASTNN_MNIST_DIR, "
                        "then the download cache)")
    p.add_argument("--quick", action="store_true",
                   help="a subset and fewer epochs (also: FASTNN_EXAMPLES_QUICK=1)")
    p.add_argument("--download", action="store_true",
                   help="download MNIST into the cache when it is not found")
    p.add_argument("--epochs", type=int, default=None, help="default 5 (3 in quick mode)")
    p.add_argument("--out", default="figures", help="directory for mnist.png (default ./figures)")
    args = p.parse_args(argv)
    args.quick = args.quick or os.environ.get("FASTNN_EXAMPLES_QUICK", "") not in ("", "0")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.mnist_dir is not None and datasets.find_mnist_dir(args.mnist_dir) != args.mnist_dir:
        # (load_mnist would go on to $FASTNN_MNIST_DIR and the cache: a directory given here
        # and lacking the files is reported instead.)
        print(f"skipped: no MNIST files in {args.mnist_dir!r}: expected train-images-idx3-ubyte, "
              f"train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
              f"(.gz or not); or leave the directory out and use --download")
        return 0
    try:
        X_train, y_train, X_test, y_test = datasets.load_mnist(args.mnist_dir,
                                                               download=args.download)
    except FileNotFoundError as exc:
        print(f"skipped: {exc} (or run this example with --download)")
        return 0

    if args.quick:
        n_train, n_test = 6000, 2000
        X_train, _, y_train, _ = train_test_split(X_train, y_train, test_size=1 - n_train / 60000,
                                                  stratify=True, seed=0)
        X_test, y_test = X_test[:n_test], y_test[:n_test]
    epochs = args.epochs or (3 if args.quick else 5)
    X_fit, X_val, y_fit, y_val = train_test_split(X_train, y_train, test_size=1 / 12,
                                                  stratify=True, seed=1)
    print(f"MNIST: {len(X_fit)} training, {len(X_val)} validation, {len(X_test)} test images")

    model = Sequential(Dense(784, 256, activation="relu", seed=0),
                       Dense(256, 128, activation="relu", seed=1),
                       Dense(128, 10, seed=2))
    t0 = time.perf_counter()
    history = model.fit(X_fit, y_fit, loss="cross_entropy", optimizer="adam", lr=1e-3,
                        epochs=epochs, batch_size=128, validation_data=(X_val, y_val),
                        verbose=2, seed=0)
    seconds = time.perf_counter() - t0
    test = model.evaluate(X_test, y_test)
    print(f"{epochs} epochs in {seconds:.1f} s; test accuracy {test['accuracy']:.4f}, "
          f"test loss {test['loss']:.4f}")

    import matplotlib
    matplotlib.use("Agg")

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "mnist.png")
    history.plot(path, title=f"MNIST, 784-256-128-10 relu, Adam: test accuracy "
                             f"{test['accuracy']:.4f}")
    print(f"saved {path}")

    target = 0.85 if args.quick else 0.97
    ok = test["accuracy"] >= target
    print(f"test accuracy >= {target}: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
