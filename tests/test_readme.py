"""Every code block of README.md runs as written.

* ```python blocks run in order in one child process, sharing their names, as a reader pasting
  them one after another into one session would (the first block's data feed the later ones).
* A python block that is a script (it has an ``if __name__ == "__main__":`` guard, as code that
  starts worker processes needs) runs alone as a file, ``python block.py``, exactly as a user
  saving it would run it: it must define everything it uses.
* Shell blocks: each line that runs ``fastnn ...`` runs (through ``python -m fastnn``, so it
  uses the fastnn under test); ``path/to/mnist`` is the MNIST directory when the tests have one.
* A block opts out only with a line ``# skip-run: <reason>`` (the reason is required).

Children run in a temporary directory (files the blocks write land there) with matplotlib's
Agg backend, under a timeout.
"""
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

import fastnn
from fastnn import datasets

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(HERE, "..", "README.md")
PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
MNIST_DIR = os.environ.get("FASTNN_MNIST_DIR",
                           os.path.join(HERE, "..", "..", "shared", "data", "mnist"))
TIMEOUT = 900

if not os.path.isfile(README):
    pytest.skip("README.md is not next to the tests", allow_module_level=True)

FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
SKIP = re.compile(r"^\s*#\s*skip-run\s*:(.*)$", re.M)
GUARD = re.compile(r"^if __name__ == [\"']__main__[\"']:", re.M)
SHELL_LANGS = {"", "sh", "bash", "shell", "console"}


def readme_blocks():
    """[(language, first line number of the code, code)] in README order."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    return [(m.group(1).lower(), text.count("\n", 0, m.start(2)) + 1, m.group(2))
            for m in FENCE.finditer(text)]


def skip_reason(code):
    m = SKIP.search(code)
    if m is None:
        return None
    reason = m.group(1).strip()
    assert reason, f"a '# skip-run:' marker needs a reason: {code[:200]!r}"
    return reason


def python_blocks():
    return [(line, code) for lang, line, code in readme_blocks()
            if lang in ("python", "py") and skip_reason(code) is None]


def fastnn_commands():
    """(README line, argv after 'fastnn') for every shell line that runs fastnn."""
    cmds = []
    for lang, line, code in readme_blocks():
        if lang not in SHELL_LANGS or skip_reason(code) is not None:
            continue
        for i, raw in enumerate(code.splitlines()):
            raw = raw.strip().removeprefix("$ ")
            if raw.startswith("fastnn "):
                cmds.append((line + i, shlex.split(raw, comments=True)[1:]))
    return cmds


def mnist_dir():
    return datasets.find_mnist_dir(MNIST_DIR) if os.path.isdir(MNIST_DIR) else None


def child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [PKG_PARENT] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    env["MPLBACKEND"] = "Agg"
    found = mnist_dir()
    if found:
        env["FASTNN_MNIST_DIR"] = os.path.abspath(found)
    return env


def needs_mnist(text):
    return re.search(r"load_mnist\(|fetch_mnist\(|--mnist|path/to/mnist", text) is not None


def run(cmd, cwd):
    res = subprocess.run(cmd, cwd=str(cwd), env=child_env(), capture_output=True, text=True,
                         timeout=TIMEOUT, check=False)
    assert res.returncode == 0, (f"{cmd} failed ({res.returncode}):\n"
                                 f"{res.stdout[-4000:]}\n{res.stderr[-6000:]}")
    return res


def padded(line, code):
    """The code preceded by blank lines, so that tracebacks give README's line numbers."""
    return "\n" * (line - 1) + code


DRIVER = """
import json, sys
blocks = json.load(open(sys.argv[1], encoding="utf-8"))
namespace = {"__name__": "__main__"}
for line, code in blocks:
    print(f"--- README.md line {line}", flush=True)
    exec(compile("\\n" * (line - 1) + code, "README.md", "exec"), namespace)
"""


def test_readme_has_the_blocks_this_test_runs():
    blocks = python_blocks()
    assert len(blocks) >= 3
    assert any(GUARD.search(code) and "LocalCluster" in code for _, code in blocks)
    assert any(argv[:1] == ["train"] for _, argv in fastnn_commands())
    assert FENCE.search("```python\nx = 1\n```\n").group(2) == "x = 1\n"


def test_readme_python_blocks_run_in_order(tmp_path):
    session = [(line, code) for line, code in python_blocks() if not GUARD.search(code)]
    if any(needs_mnist(code) for _, code in session) and mnist_dir() is None:
        pytest.skip(f"a README block needs MNIST, not found in {MNIST_DIR}")
    (tmp_path / "blocks.json").write_text(json.dumps(session))
    (tmp_path / "driver.py").write_text(DRIVER)
    res = run([sys.executable, "driver.py", "blocks.json"], tmp_path)
    assert res.stdout.count("--- README.md line") == len(session)


@pytest.mark.parametrize("line,code", [b for b in python_blocks() if GUARD.search(b[1])],
                         ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_readme_script_block_runs_as_a_file(tmp_path, line, code):
    if needs_mnist(code) and mnist_dir() is None:
        pytest.skip(f"the block needs MNIST, not found in {MNIST_DIR}")
    (tmp_path / "readme_block.py").write_text(padded(line, code))
    run([sys.executable, "readme_block.py"], tmp_path)


def _user_files(d):
    """The files the README's CLI lines stand for as "your data": a numeric CSV with a header
    and a ``price`` target (a linear function of the features plus noise), new rows without the
    target, labelled test rows, and an X.npy/y.npy pair of three classes."""
    import numpy as np
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (260, 3))
    price = 100 + 50 * X[:, 0] - 20 * X[:, 1] + 10 * X[:, 2] + rng.normal(0, 1, 260)
    rows = [",".join(f"{v:.6g}" for v in (*x, p)) for x, p in zip(X, price)]
    (d / "houses.csv").write_text("rooms,area,age,price\n" + "\n".join(rows[:200]) + "\n")
    (d / "test.csv").write_text("rooms,area,age,price\n" + "\n".join(rows[200:]) + "\n")
    (d / "new.csv").write_text("rooms,area,age\n" + "\n".join(
        ",".join(r.split(",")[:3]) for r in rows[200:220]) + "\n")
    Xc = rng.normal(size=(150, 5))
    np.save(d / "X.npy", Xc)
    np.save(d / "y.npy", (Xc[:, 0] > 0).astype(int) + (Xc[:, 1] > 1).astype(int))


@pytest.fixture(scope="module")
def cli_dir(tmp_path_factory):
    """One directory for every README CLI line, in README order (a model saved by one line is
    read by the next), holding the user data files the lines name."""
    d = tmp_path_factory.mktemp("readme_cli")
    _user_files(d)
    return d


@pytest.mark.parametrize("line,argv", [
    pytest.param(line, argv, marks=[pytest.mark.slow] if any(map(needs_mnist, argv)) else [])
    for line, argv in fastnn_commands()],
    ids=lambda v: f"line{v}" if isinstance(v, int) else " ".join(v))
def test_readme_fastnn_command_runs(cli_dir, line, argv):
    if any(needs_mnist(a) for a in argv):
        found = mnist_dir()
        if found is None:
            pytest.skip(f"needs MNIST, not found in {MNIST_DIR}")
        argv = [os.path.abspath(found) if a == "path/to/mnist" else a for a in argv]
    # "fastnn a && fastnn b" runs both, in order
    commands, current = [], []
    for a in argv:
        if a == "&&":
            commands.append(current)
            current = []
        elif not (a == "fastnn" and not current):
            current.append(a)
    commands.append(current)
    for cmd in commands:
        run([sys.executable, "-m", "fastnn", *cmd], cli_dir)
