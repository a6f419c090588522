"""Every script in examples/ runs in quick mode, saves the figure it promises and prints its
claim as met (each example checks its own claim and exits with status 1 when it fails).

The examples run as subprocesses against the same fastnn this test imports (the installed
package, or the source tree with ``python -m pytest``)."""
import os
import re
import subprocess
import sys

import pytest

import fastnn
from fastnn import datasets

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")
MNIST_DIR = os.environ.get(
    "FASTNN_MNIST_DIR",
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist"))

pytestmark = pytest.mark.skipif(not os.path.isdir(EXAMPLES),
                                reason="examples/ not next to tests/ (tests copied alone)")

# The lecture's Table 3.6 (x1, x2, x3, v, y), typed here independently of the example.
TABLE_3_6 = [(-1, -1, -1, -7, -1), (-1, -1, 1, -9, -1), (-1, 1, -1, 1, 1), (-1, 1, 1, -1, -1),
             (1, -1, -1, -3, -1), (1, -1, 1, -5, -1), (1, 1, -1, 5, 1), (1, 1, 1, 3, 1)]


def run_example(name, out_dir, *args, env=None):
    """Run examples/<name> in quick mode with its figures in out_dir; return the result."""
    full_env = dict(os.environ)
    # The same fastnn as this process: its parent directory first on the path.
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    full_env["PYTHONPATH"] = os.pathsep.join(
        [pkg_parent] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    full_env["MPLBACKEND"] = "Agg"
    full_env["FASTNN_EXAMPLES_QUICK"] = "1"
    full_env.update(env or {})
    os.makedirs(out_dir, exist_ok=True)   # also the working directory: nothing lands elsewhere
    res = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), "--quick",
                          "--out", str(out_dir), *args],
                         capture_output=True, text=True, env=full_env, timeout=300, check=False,
                         cwd=str(out_dir))
    assert res.returncode == 0, (f"{name} exited with {res.returncode}\nstdout:\n{res.stdout}"
                                 f"\nstderr:\n{res.stderr}")
    return res


def test_every_example_is_tested():
    scripts = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py"))
    assert set(scripts) == set(CLAIMS) | {"mcculloch_pitts.py", "mnist.py"}, scripts
    with open(os.path.join(EXAMPLES, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    for s in scripts:
        assert f"`{s}`" in readme, f"{s} is not listed in examples/README.md"


def test_mcculloch_pitts_reproduces_table_3_6(tmp_path):
    res = run_example("mcculloch_pitts.py", tmp_path)
    rows = [tuple(int(v) for v in m.groups()) for m in re.finditer(
        r"^\s*(-?\d+)\s+(-?\d+)\s+(-?\d+)\s+(-?\d+)\s+(-?\d+)\s+\(.*\)\s+ok$", res.stdout,
        re.MULTILINE)]
    assert rows == TABLE_3_6, res.stdout
    assert "truth table reproduced: yes" in res.stdout
    assert "step activation" in res.stdout and "matches the truth table" in res.stdout
    assert not list(tmp_path.glob("*.png"))   # promises no figure, writes none


# script -> (figure, line(s) the script prints when its claim holds)
CLAIMS = {
    "xor.py": ("xor.png", ["threshold network computes XOR: yes", "XOR solved: yes"]),
    "universal_approximation.py": ("universal_approximation.png",
                                   ["error falls with width: yes"]),
    "spirals.py": ("spirals.png", ["depth helps: yes"]),
    "maxout_spirals.py": ("maxout_spirals.png", ["maxout matches relu: yes"]),
    "softmax_vs_sparsemax.py": ("softmax_vs_sparsemax.png", ["identities hold: yes"]),
    "keras_mlp.py": ("keras_mlp.png", [("honest accuracy (chance on random labels, teacher "
                                        "learned with lr 0.01): yes")]),
    "linear_regions.py": ("linear_regions.png", ["region counts match the theory: yes"]),
}


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_example_claim_and_figure(name, tmp_path):
    figure, claims = CLAIMS[name]
    out = tmp_path / "figs"
    res = run_example(name, out)
    for claim in claims:
        assert claim in res.stdout, res.stdout
    png = out / figure
    assert png.is_file(), f"{name} did not save {png}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000     # a drawn figure, not an empty canvas
    if name == "xor.py":
        check_xor_table(res.stdout)


def check_xor_table(stdout):
    """The hand-set threshold network's printed table is XOR in the bipolar encoding."""
    rows = re.findall(r"^\s*(-?1)\s+(-?1) \|\s+(-?1)\s+(-?1) \|\s+(-?1)\s+ok$", stdout,
                      re.MULTILINE)
    got = {(int(a), int(b)): int(y) for a, b, _, _, y in rows}
    assert got == {(-1, -1): -1, (-1, 1): 1, (1, -1): 1, (1, 1): -1}, stdout


@pytest.mark.skipif(datasets.find_mnist_dir(MNIST_DIR) is None,
                    reason=f"MNIST not found in {MNIST_DIR}")
def test_mnist_example(tmp_path):
    res = run_example("mnist.py", tmp_path / "figs", datasets.find_mnist_dir(MNIST_DIR))
    assert "test accuracy >= 0.85: yes" in res.stdout, res.stdout
    assert (tmp_path / "figs" / "mnist.png").is_file()


def test_mnist_example_skips_cleanly_without_data(tmp_path):
    empty = tmp_path / "no-mnist-here"
    empty.mkdir()
    res = run_example("mnist.py", tmp_path, str(empty),
                      env={"FASTNN_MNIST_DIR": str(empty), "FASTNN_DATA_DIR": str(empty)})
    assert res.stdout.startswith("skipped:") and "MNIST" in res.stdout, res.stdout
    assert "--download" in res.stdout
    assert not list(tmp_path.rglob("*.png"))
