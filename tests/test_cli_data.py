"""The fastnn command with saved models and the user's own data: train --save, predict,
evaluate reproduce the reported score on raw inputs; usage errors are one line, exit status 2,
before training."""
import os
import re
import stat
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn import datasets
from fastnn.__main__ import build_parser, main
from fastnn.data import train_test_split

PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))


def run(args, cwd, timeout=180):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([PKG_PARENT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "2")
    return subprocess.run([sys.executable, "-m", "fastnn", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def score(text, name="accuracy"):
    m = re.search(rf"{re.escape(name)}: (-?\d+\.\d+)\s+\((?:test )?loss (\d+\.\d+)", text)
    assert m, text
    return m.group(1), m.group(2)


def test_saved_model_reproduces_the_reported_accuracy_on_raw_inputs(tmp_path):
    r = run(["train", "--epochs", "8", "--seed", "3", "--save", "m.npz"], tmp_path)
    assert r.returncode == 0, r.stderr
    reported = score(r.stdout)
    model = fastnn.load(tmp_path / "m.npz")
    assert isinstance(model[0], fastnn.Normalization)
    assert model.metadata["data"] == "digits" and model.metadata["seed"] == 3

    # evaluate on the recorded held-out split: the same accuracy and loss
    r = run(["evaluate", "m.npz"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert score(r.stdout) == reported
    assert "360 samples" in r.stdout

    # predict on the same split: classes whose accuracy against the true labels is the reported
    r = run(["predict", "m.npz"], tmp_path)
    assert r.returncode == 0, r.stderr
    pred = np.array(r.stdout.split(), dtype=np.int64)
    X, y = datasets.load_digits(dtype=np.float32)
    _, X_test, _, y_test = train_test_split(X, y, test_size=0.2, stratify=True, seed=3)
    assert pred.shape == y_test.shape
    assert f"{np.mean(pred == y_test):.4f}" == reported[0]

    # the raw (unstandardized) test inputs through a .npy file and a .npz with labels
    np.save(tmp_path / "X_test.npy", X_test)
    np.save(tmp_path / "y_test.npy", y_test)
    r = run(["predict", "m.npz", "X_test.npy", "--out", "pred.txt"], tmp_path)
    assert r.returncode == 0 and r.stdout == ""
    np.testing.assert_array_equal(np.loadtxt(tmp_path / "pred.txt", dtype=np.int64), pred)
    r = run(["evaluate", "m.npz", "X_test.npy", "--labels", "y_test.npy"], tmp_path)
    assert score(r.stdout) == reported
    np.savez(tmp_path / "test.npz", X=X_test, y=y_test)
    r = run(["evaluate", "m.npz", "test.npz"], tmp_path)
    assert score(r.stdout) == reported

    # probabilities: rows sum to one, argmax is the class
    r = run(["predict", "m.npz", "X_test.npy", "--proba"], tmp_path)
    lines = r.stdout.splitlines()
    assert lines[0] == ",".join(str(c) for c in range(10))
    proba = np.loadtxt(lines[1:], delimiter=",")
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(proba.argmax(axis=1), pred)


def write_csv(path, header, rows):
    with open(path, "w") as f:
        f.write(",".join(header) + "\n")
        for row in rows:
            f.write(",".join(str(v) for v in row) + "\n")


def blobs(n=240, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)) * [1.0, 50.0, 0.01] + [0.0, 1000.0, -5.0]
    label = np.where(X[:, 0] + (X[:, 1] - 1000.0) / 50.0 > 0, "big", "small")
    return X, label


def test_train_on_a_csv_with_text_labels_then_predict_and_evaluate(tmp_path):
    X, label = blobs()
    write_csv(tmp_path / "d.csv", ["x0", "x1", "x2", "kind"],
              [[f"{a:.6f}", f"{b:.6f}", f"{c:.6f}", k] for (a, b, c), k in zip(X, label)])
    r = main(["train", "--data", str(tmp_path / "d.csv"), "--target", "kind", "--epochs", "20",
              "--save", str(tmp_path / "d.npz"), "-q"])
    assert r == 0
    model = fastnn.load(tmp_path / "d.npz")
    assert model.metadata["classes"] == ["big", "small"]
    assert model.metadata["feature_names"] == ["x0", "x1", "x2"]
    # the CSV with its target column: features are taken by name, the labels are text
    r = run(["predict", "d.npz", "d.csv"], tmp_path)
    assert r.returncode == 0, r.stderr
    pred = np.array(r.stdout.split())
    assert set(pred) <= {"big", "small"}
    assert np.mean(pred == label) > 0.9
    r = run(["evaluate", "d.npz", "d.csv"], tmp_path)
    acc, _ = score(r.stdout)
    assert acc == f"{np.mean(pred == label):.4f}"


def test_regression_target_predicts_values(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 2))
    y = 3.0 * X[:, 0] - X[:, 1] + 0.25
    write_csv(tmp_path / "r.csv", ["a", "b", "y"], np.column_stack([X, y]).round(6))
    r = run(["train", "--data", "r.csv", "--target", "y", "--epochs", "40", "--save", "r.npz"],
            tmp_path)
    assert r.returncode == 0, r.stderr
    reported = score(r.stdout, "R^2")
    assert float(reported[0]) > 0.8
    r = run(["predict", "r.npz", "r.csv"], tmp_path)
    values = np.array(r.stdout.split(), dtype=np.float64)
    assert values.shape == (300,) and np.corrcoef(values, y)[0, 1] > 0.9
    r = run(["evaluate", "r.npz", "r.csv"], tmp_path)
    assert r.returncode == 0 and "R^2" in r.stdout


def one_line_error(r, *words):
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr
    assert "epoch 1/" not in r.stderr and "test accuracy" not in r.stdout   # before training


@pytest.mark.parametrize("args, words", [
    (["train", "--lr", "-1"], ["--lr", "-1"]),
    (["train", "--lr", "nan"], ["--lr"]),
    (["train", "--epochs", "0"], ["positive integer"]),
    (["train", "--l2", "-0.5"], ["--l2"]),
    (["train", "--test-size", "0"], ["--test-size"]),
    (["train", "--early-stopping", "-2"], ["--early-stopping"]),
    (["train", "--save", "no/such/dir/m.npz"], ["--save", "does not exist"]),
    (["train", "--save", "."], ["--save", "directory"]),
    (["train", "--data", "missing.csv", "--target", "t"], ["missing.csv", "not found"]),
    (["train", "--data", "bad.csv", "--target", "t"], ["'b'", "not numeric", "line 3"]),
    (["train", "--data", "hole.csv", "--target", "t"], ["missing value", "'b'"]),
    (["train", "--data", "empty.csv", "--target", "t"], ["empty"]),
    (["train", "--data", "header.csv", "--target", "t"], ["no data rows"]),
    (["train", "--data", "ok.csv", "--target", "nope"], ["no column 'nope'"]),
    (["train", "--data", "ok.csv"], ["--target"]),
    (["train", "--data", "X.npy"], ["--labels"]),
    (["train", "--data", "data.txt"], ["unknown data format"]),
    (["train", "--target", "t"], ["--data"]),
    (["predict", "nothing.npz"], ["not found"]),
    (["predict", "ok.csv"], ["ok.csv"]),
    (["predict", "m.npz", "--out", "no/such/dir/p.txt"], ["--out", "does not exist"]),
    (["predict", "m.npz", "X.npy"], ["5 feature columns", "64"]),
    (["evaluate", "m.npz", "X.npy"], ["--labels"]),
    (["predict", "--bogus", "m.npz"], ["--bogus"]),
])
def test_usage_errors_are_one_line_with_status_2(tmp_path_factory, args, words):
    d = tmp_path_factory.getbasetemp() / "cli_errors"
    if not (d / "m.npz").exists():
        d.mkdir(exist_ok=True)
        (d / "bad.csv").write_text("a,b,t\n1,2,0\n3,zz,1\n")
        (d / "hole.csv").write_text("a,b,t\n1,2,0\n3,,1\n")
        (d / "empty.csv").write_text("")
        (d / "header.csv").write_text("a,b,t\n")
        (d / "ok.csv").write_text("a,b,t\n1,2,0\n3,4,1\n")
        (d / "data.txt").write_text("1 2\n")
        np.save(d / "X.npy", np.zeros((4, 5)))
        assert main(["train", "--epochs", "1", "-q", "--save", str(d / "m.npz")]) == 0
    one_line_error(run(args, d), *words)


def test_unwritable_save_directory_fails_before_training(tmp_path):
    if os.name == "posix" and os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
        try:
            one_line_error(run(["train", "--save", str(ro / "m.npz")], tmp_path), "cannot write")
        finally:
            ro.chmod(stat.S_IRWXU)
        assert list(ro.iterdir()) == []   # the probe file was removed
    elif os.path.isdir("/proc/self"):     # root writes anywhere, except in /proc
        one_line_error(run(["train", "--save", "/proc/self/m.npz"], tmp_path), "cannot write")
    else:
        pytest.skip("no unwritable directory to try")


def test_help_shows_each_default_once_and_every_option_has_help():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, type(parser._subparsers
                                                                      ._group_actions[0])))
    for name, sub in subparsers.choices.items():
        text = sub.format_help()
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        # each option's help mentions its default at most once
        blocks = re.split(r"\n  (?=-)", text)
        for block in blocks:
            assert block.count("default") <= 1, block
    train_help = subparsers.choices["train"].format_help()
    assert "(default: relu)" in re.sub(r"\s+", " ", train_help)


def test_train_on_npy_pairs_and_npz(tmp_path, capsys):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 6)) * 30.0 + 100.0          # raw, far from standardized
    y = (X[:, 0] > 100.0).astype(np.int64) + 2 * (X[:, 1] > 100.0)   # classes 0..3
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    np.savez(tmp_path / "xy.npz", X=X, y=y)
    assert main(["train", "--data", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"),
                 "--epochs", "60", "--dtype", "float64", "--save", str(tmp_path / "a.npz")]) == 0
    out_npy = capsys.readouterr().out
    assert main(["train", "--data", str(tmp_path / "xy.npz"), "--epochs", "60",
                 "--dtype", "float64", "--save", str(tmp_path / "b.npz")]) == 0
    out_npz = capsys.readouterr().out
    # the same data and seed, two containers: the same split, model and score
    assert score(out_npy) == score(out_npz)
    assert float(score(out_npy)[0]) > 0.8
    model = fastnn.load(tmp_path / "a.npz")
    assert model.dtype == np.float64 and model.metadata["classes"] == [0, 1, 2, 3]
    assert main(["evaluate", str(tmp_path / "a.npz"), str(tmp_path / "xy.npz")]) == 0
    assert "200 samples" in capsys.readouterr().out
