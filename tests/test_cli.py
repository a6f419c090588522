"""The fastnn command, end to end in a subprocess (python -m fastnn, and the console script)."""
import os
import re
import shutil
import subprocess
import sys

import pytest

import fastnn

PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))


def run(args, tmp_path, extra_path=None, timeout=180):
    env = dict(os.environ)
    paths = ([extra_path] if extra_path else []) + [PKG_PARENT]
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "2")
    return subprocess.run([sys.executable, "-m", "fastnn", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_help(tmp_path):
    r = run(["--help"], tmp_path)
    assert r.returncode == 0 and "train" in r.stdout
    r = run(["train", "--help"], tmp_path)
    assert r.returncode == 0
    for opt in ("--mnist", "--hidden", "--activation", "--output", "--loss", "--optimizer",
                "--lr", "--epochs", "--batch-size", "--l1", "--l2", "--dropout", "--seed",
                "--threads", "--save", "--plot"):
        assert opt in r.stdout
    assert run(["--version"], tmp_path).stdout.startswith("fastnn ")


def test_default_train_runs_offline_and_reports_accuracy(tmp_path):
    r = run(["train"], tmp_path)
    assert r.returncode == 0, r.stderr
    m = re.search(r"test accuracy: (\d\.\d+)", r.stdout)
    assert m, r.stdout
    assert float(m.group(1)) >= 0.97
    assert "digits" in r.stdout
    assert "epoch 30/30" in r.stderr  # progress, one line per epoch when not a terminal


def test_train_with_options_save_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    r = run(["train", "--hidden", "32", "16", "--activation", "tanh", "--output", "sparsemax",
             "--optimizer", "sgd", "--lr", "0.05", "--epochs", "6", "--batch-size", "64",
             "--l2", "1e-4", "--l1", "1e-6", "--dropout", "0.1", "--seed", "3", "--threads", "1",
             "--halve-lr", "--early-stopping", "3", "--save", "m.npz", "--plot", "curve.png"],
            tmp_path)
    assert r.returncode == 0, r.stderr
    assert "64-32-16-10" in r.stdout and "sparsemax loss" in r.stdout
    assert "test accuracy:" in r.stdout
    assert (tmp_path / "m.npz").exists() and (tmp_path / "curve.png").stat().st_size > 1000
    model = fastnn.load(tmp_path / "m.npz")
    assert model.optimizer is not None
    r = run(["train", "--epochs", "2", "-q"], tmp_path)
    assert r.returncode == 0 and r.stdout.count("\n") == 1 and r.stderr == ""


def test_plot_without_matplotlib_is_a_clear_error(tmp_path):
    fake = tmp_path / "nompl"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('no matplotlib')\n")
    r = run(["train", "--epochs", "1", "--plot", "x.png"], tmp_path, extra_path=str(fake))
    assert r.returncode == 2
    assert "--plot needs matplotlib" in r.stderr and "pip install" in r.stderr


def test_bad_mnist_path_and_bad_options(tmp_path):
    r = run(["train", "--mnist", str(tmp_path / "nowhere")], tmp_path)
    assert r.returncode == 2 and "no MNIST files" in r.stderr
    r = run(["train", "--epochs", "0"], tmp_path)
    assert r.returncode == 2 and "positive integer" in r.stderr
    r = run(["train", "--output", "sparsemax", "--loss", "cross_entropy"], tmp_path)
    assert r.returncode == 2 and "sparsemax" in r.stderr


@pytest.mark.skipif(shutil.which("fastnn") is None, reason="console script not installed")
def test_console_script(tmp_path):
    r = subprocess.run(["fastnn", "train", "--epochs", "2", "-q"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "test accuracy:" in r.stdout
