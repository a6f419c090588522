"""Check fastnn's distributions: the sdist carries the Cython sources and no generated C, the
wheel carries every compiled kernel with its .pyi stub and the py.typed marker.

    python .ci/check_wheel.py dist/fastnn-*.tar.gz dist/fastnn-*.whl [--vendored-openmp]
    python .ci/check_wheel.py --vendored-openmp wheelhouse/     (every wheel in a directory)

--vendored-openmp (repaired cibuildwheel wheels): the OpenMP runtime is inside the wheel
(libgomp by auditwheel on Linux, libomp by delocate on macOS, vcomp by delvewheel on Windows).
Exits with status 1 and a list of problems otherwise.
"""
import argparse
import glob
import os
import re
import sys
import tarfile
import zipfile


def check_sdist(path):
    with tarfile.open(path) as tf:
        names = [n.split("/", 1)[1] for n in tf.getnames() if "/" in n]
    problems = []
    kernels = [n for n in names if re.fullmatch(r"fastnn/_kernels/[^/]+\.pyx", n)]
    if not kernels:
        problems.append("no fastnn/_kernels/*.pyx")
    for must in ("setup.py", "pyproject.toml", "fastnn/py.typed", "fastnn/_kernels/_openmp.pxd",
                 "fastnn/_kernels/_blas.pxd"):
        if must not in names:
            problems.append(f"missing {must}")
    for pyx in kernels:
        if pyx[:-4] + ".pyi" not in names:
            problems.append(f"missing the stub of {pyx}")
    generated = [n for n in names if re.search(r"\.(c|cpp|so|pyd|html)$", n)]
    if generated:
        problems.append(f"generated or binary files: {generated}")
    return problems, [k.rsplit("/", 1)[1][:-4] for k in kernels]


def check_wheel(path, kernels, vendored_openmp):
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    problems = []
    ext = re.compile(r"fastnn/_kernels/([A-Za-z0-9_]+)\.[^/]*(\.so|\.pyd)$")
    built = {m.group(1) for m in map(ext.match, names) if m}
    for k in kernels:
        if k not in built:
            problems.append(f"kernel {k} not compiled into the wheel")
        if f"fastnn/_kernels/{k}.pyi" not in names:
            problems.append(f"missing fastnn/_kernels/{k}.pyi")
    if "fastnn/py.typed" not in names:
        problems.append("missing fastnn/py.typed")
    if not any(n.startswith("fastnn/datasets/data/digits") for n in names):
        problems.append("missing the shipped digits data set")
    if [n for n in names if n.endswith((".c", ".cpp"))]:
        problems.append("generated C sources in the wheel")
    if vendored_openmp:
        runtime = re.compile(r"(^fastnn\.libs/libgomp|/\.dylibs/libomp|^fastnn\.libs/vcomp)")
        if not any(runtime.search(n) for n in names):
            problems.append("no vendored OpenMP runtime (libgomp / libomp / vcomp)")
    return problems


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+",
                   help="an sdist (.tar.gz), wheels (.whl), or directories holding wheels")
    p.add_argument("--vendored-openmp", action="store_true")
    args = p.parse_args(argv)
    files = []
    for f in args.files:
        files += sorted(glob.glob(os.path.join(f, "*.whl"))) if os.path.isdir(f) else [f]
    if not files:
        print("no distribution to check", file=sys.stderr)
        return 1
    kernels, problems = None, []
    for f in sorted(files, key=lambda f: not f.endswith(".tar.gz")):  # sdist first
        if f.endswith(".tar.gz"):
            probs, kernels = check_sdist(f)
        elif f.endswith(".whl"):
            if kernels is None:   # no sdist given: the kernels the wheel's .pyx files name
                with zipfile.ZipFile(f) as zf:
                    kernels = [n.rsplit("/", 1)[1][:-4] for n in zf.namelist()
                               if re.fullmatch(r"fastnn/_kernels/[^/]+\.pyx", n)]
            probs = check_wheel(f, kernels, args.vendored_openmp)
        else:
            probs = ["neither an sdist nor a wheel"]
        problems += [f"{f}: {m}" for m in probs]
        print(f"{f}: {'ok' if not probs else 'PROBLEMS'}")
    for m in problems:
        print("  " + m, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
