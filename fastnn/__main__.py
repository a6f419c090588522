"""The ``fastnn`` command: ``fastnn train`` trains an MLP and reports its test accuracy.

By default it trains on the handwritten digits shipped inside fastnn (offline, a few seconds);
``--mnist PATH`` trains on MNIST read from IDX files. Run ``fastnn train --help`` for options.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time

__all__ = ["main", "build_parser", "build_mlp"]

_OPTIMIZERS = ("adam", "sgd", "rmsprop", "adagrad")
_ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity")


def build_mlp(n_features, hidden, n_outputs, *, activation="relu", dropout=0.0, seed=0,
              dtype="float32"):
    """A Sequential MLP: Dense(+activation)(+Dropout) per hidden size, then a linear output
    layer producing logits (the output map - softmax or sparsemax - is the loss's)."""
    import numpy as np

    from fastnn.layers import Dense, Dropout
    from fastnn.model import Sequential

    rng = np.random.default_rng(seed)
    layers = []
    width = n_features
    for h in hidden:
        layers.append(Dense(width, h, activation=activation,
                            seed=int(rng.integers(2 ** 31)), dtype=dtype))
        if dropout > 0:
            layers.append(Dropout(dropout, seed=int(rng.integers(2 ** 31))))
        width = h
    layers.append(Dense(width, n_outputs, seed=int(rng.integers(2 ** 31)), dtype=dtype))
    return Sequential(*layers, dtype=dtype)


def _positive_int(s):
    v = int(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s}")
    return v


def _nonneg_float(s):
    v = float(s)
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {s}")
    return v


def _fraction(s):
    v = float(s)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {s}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from fastnn import __version__

    parser = argparse.ArgumentParser(
        prog="fastnn",
        description="fastnn: fast multi-layer perceptrons on the CPU.",
        epilog="Run 'fastnn train' to train an MLP on the shipped digits data set.")
    parser.add_argument("--version", action="version", version=f"fastnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser(
        "train", help="train an MLP and report its test accuracy",
        description="Train a multi-layer perceptron and report its test accuracy. Default: "
                    "the UCI handwritten digits shipped with fastnn (1797 8x8 images; "
                    "stratified train/validation/test split, standardized with training "
                    "statistics), which runs offline in seconds.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = t.add_argument_group("data")
    data.add_argument("--mnist", metavar="PATH", nargs="?", const="",
                      help="train on MNIST from the IDX files in PATH (gzipped or raw); "
                           "without PATH: $FASTNN_MNIST_DIR or the download cache")
    data.add_argument("--download", action="store_true",
                      help="with --mnist: download MNIST into the cache if it is missing")
    data.add_argument("--val-size", type=_fraction, default=None,
                      help="fraction of the training data held out for validation (0: none; "
                           "default: 0 for the small digits set - unless --early-stopping or "
                           "--halve-lr need one, then 0.1 - and 1/12, 5000 images, for MNIST)")
    data.add_argument("--test-size", type=_fraction, default=0.2,
                      help="fraction of the shipped data held out for testing "
                           "(MNIST has its own test set)")
    data.add_argument("--no-standardize", action="store_true",
                      help="do not standardize the digits inputs (MNIST is always only "
                           "scaled to [0, 1])")
    model = t.add_argument_group("model")
    model.add_argument("--hidden", type=_positive_int, nargs="*", default=None, metavar="N",
                       help="hidden layer sizes (default: 128 for digits, 256 256 for MNIST; "
                            "none for a linear model)")
    model.add_argument("--activation", choices=_ACTIVATIONS, default="relu")
    model.add_argument("--output", choices=("softmax", "sparsemax"), default="softmax",
                       help="output map of the classifier")
    model.add_argument("--loss", choices=("auto", "cross_entropy", "sparsemax"),
                       default="auto",
                       help="auto: cross_entropy for softmax, sparsemax loss for sparsemax")
    model.add_argument("--dropout", type=_fraction, default=0.0,
                       help="dropout probability after each hidden layer")
    model.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    opt = t.add_argument_group("optimization")
    opt.add_argument("--optimizer", choices=_OPTIMIZERS, default="adam")
    opt.add_argument("--lr", type=float, default=None,
                     help="learning rate (default: 1e-3 for adam, 0.1 for sgd, 1e-2 otherwise)")
    opt.add_argument("--momentum", type=_nonneg_float, default=0.9, help="sgd momentum")
    opt.add_argument("--epochs", type=_positive_int, default=None,
                     help="passes over the training set (default: 30 digits, 3 MNIST)")
    opt.add_argument("--batch-size", type=_positive_int, default=None,
                     help="mini-batch size (default: 32 digits, 128 MNIST)")
    opt.add_argument("--l1", type=_nonneg_float, default=0.0, help="L1 penalty on weights")
    opt.add_argument("--l2", type=_nonneg_float, default=0.0,
                     help="L2 penalty (weight decay) on weights")
    opt.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                     help="stop when the validation loss has not improved for PATIENCE "
                          "epochs and restore the best weights")
    opt.add_argument("--halve-lr", action="store_true",
                     help="halve the learning rate after each epoch where the validation "
                          "loss increased, rolling back to the previous epoch")
    run = t.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--threads", type=_positive_int, default=None,
                     help="threads for the kernels and BLAS (default: all allowed)")
    run.add_argument("--save", metavar="PATH", help="save the trained model (.npz)")
    run.add_argument("--plot", metavar="PNG", help="save the learning curves (needs matplotlib)")
    run.add_argument("-q", "--quiet", action="store_true", help="only print the final result")

    sub.add_parser("info", help="show fastnn's build and runtime configuration")
    return parser


def _load_data(args):
    import numpy as np

    from fastnn import datasets
    from fastnn.data import Standardizer, train_test_split

    dtype = np.dtype(args.dtype)
    if args.mnist is not None:
        X_train, y_train, X_test, y_test = datasets.load_mnist(
            args.mnist or None, dtype=dtype, download=args.download)
        name = "MNIST"
        if args.val_size > 0:
            X_train, X_val, y_train, y_val = train_test_split(
                X_train, y_train, test_size=args.val_size, stratify=True, seed=args.seed)
        else:
            X_val = y_val = None
        scaler = None  # pixels scaled to [0, 1], the usual MNIST preprocessing
    else:
        X, y = datasets.load_digits(dtype=dtype)
        name = "digits (UCI, shipped)"
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=args.test_size, stratify=True, seed=args.seed)
        X_val = y_val = None
        if args.val_size > 0:
            X_train, X_val, y_train, y_val = train_test_split(
                X_train, y_train, test_size=args.val_size, stratify=True, seed=args.seed + 1)
        scaler = None if args.no_standardize else Standardizer().fit(X_train)
    if scaler is not None:
        X_train = scaler.transform(X_train)
        X_test = scaler.transform(X_test)
        if X_val is not None:
            X_val = scaler.transform(X_val)
    return name, X_train, y_train, X_val, y_val, X_test, y_test


def _train(args) -> int:
    from fastnn import callbacks as cbs
    from fastnn import training

    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("fastnn: --plot needs matplotlib, which is not installed; install it with "
                  "'pip install matplotlib' (or 'pip install \"fastnn[plot]\"')",
                  file=sys.stderr)
            return 2
    if args.mnist is None and args.download:
        print("fastnn: --download only applies with --mnist", file=sys.stderr)
        return 2
    mnist = args.mnist is not None
    if args.val_size is None:
        needs_val = args.early_stopping is not None or args.halve_lr
        args.val_size = 1.0 / 12.0 if mnist else (0.1 if needs_val else 0.0)
    loss = args.loss if args.loss != "auto" else (
        "cross_entropy" if args.output == "softmax" else "sparsemax")
    if (args.output, loss) == ("sparsemax", "cross_entropy"):
        print("fastnn: --output sparsemax goes with the sparsemax loss (cross-entropy needs "
              "softmax probabilities)", file=sys.stderr)
        return 2
    hidden = args.hidden if args.hidden is not None else ([256, 256] if mnist else [128])
    epochs = args.epochs or (3 if mnist else 30)
    batch_size = args.batch_size or (128 if mnist else 32)
    lr = args.lr if args.lr is not None else {"adam": 1e-3, "sgd": 0.1}.get(args.optimizer,
                                                                          1e-2)
    if (args.early_stopping is not None or args.halve_lr) and args.val_size == 0:
        print("fastnn: --early-stopping and --halve-lr need a validation set (--val-size > 0)",
              file=sys.stderr)
        return 2

    limits = contextlib.nullcontext()
    if args.threads is not None:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(limits=args.threads)

    t_start = time.perf_counter()
    try:
        name, X_train, y_train, X_val, y_val, X_test, y_test = _load_data(args)
    except (OSError, ValueError) as e:
        print(f"fastnn: {e}", file=sys.stderr)
        return 1
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    model = build_mlp(X_train.shape[1], hidden, n_classes, activation=args.activation,
                      dropout=args.dropout, seed=args.seed, dtype=args.dtype)
    if args.threads is not None:
        model.n_threads = args.threads
    opt_kwargs = {"weight_decay": args.l2, "l1": args.l1}
    if args.optimizer == "sgd":
        opt_kwargs["momentum"] = args.momentum
    optimizer = training.make_optimizer(args.optimizer, model.parameters(), lr=lr,
                                        **opt_kwargs)
    callbacks = []
    if args.halve_lr:
        callbacks.append(cbs.HalveLROnIncrease(monitor="val_loss", rollback=True))
    if args.early_stopping is not None:
        callbacks.append(cbs.EarlyStopping(monitor="val_loss", patience=args.early_stopping,
                                           restore_best_weights=True))
    out = sys.stdout
    if not args.quiet:
        arch = "-".join(str(w) for w in [X_train.shape[1], *hidden, n_classes])
        print(f"data: {name}: {len(X_train)} train, "
              f"{0 if X_val is None else len(X_val)} validation, {len(X_test)} test samples",
              file=out)
        print(f"model: MLP {arch}, {args.activation}, {args.output} output, {loss} loss, "
              f"{args.dtype}, dropout {args.dropout}; {args.optimizer} lr {lr:g}, "
              f"batch {batch_size}, {epochs} epochs, L1 {args.l1:g}, L2 {args.l2:g}",
              file=out, flush=True)
    verbose = 0 if args.quiet else (1 if sys.stderr.isatty() else 2)
    t_fit = time.perf_counter()
    with limits:
        try:
            history = training.fit(
                model, X_train, y_train, loss=loss, optimizer=optimizer, epochs=epochs,
                batch_size=batch_size, validation_data=None if X_val is None else (X_val, y_val),
                callbacks=callbacks, verbose=verbose, seed=args.seed)
        except FloatingPointError as e:
            print(f"fastnn: {e}", file=sys.stderr)
            return 1
        fit_time = time.perf_counter() - t_fit
        result = training.evaluate(model, X_test, y_test)
    print(f"test accuracy: {result['accuracy']:.4f}  (test loss {result['loss']:.4f}; "
          f"{len(history)} epochs in {fit_time:.1f}s, total {time.perf_counter() - t_start:.1f}s)",
          file=out, flush=True)
    if args.save:
        from fastnn import io

        io.save(model, args.save, optimizer=model.optimizer)
        if not args.quiet:
            print(f"saved model to {args.save}", file=out)
    if args.plot:
        history.plot(args.plot, title=f"fastnn on {name}: test accuracy "
                                      f"{result['accuracy']:.4f}")
        if not args.quiet:
            print(f"saved learning curves to {args.plot}", file=out)
    return 0


def main(argv=None) -> int:
    """Entry point of the ``fastnn`` console script and ``python -m fastnn``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        return _train(args)
    if args.command == "info":
        import fastnn

        fastnn.show_config()
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
