"""MNIST from IDX files: from a directory, the FASTNN_MNIST_DIR variable, or a download cache.

fastnn never needs MNIST (or the internet) to run; the shipped digits set serves the defaults.
Every MNIST file is checked against its known sha256 (gzipped and raw variants both known).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.parse
import urllib.request

import numpy as np

from fastnn.datasets.idx import ChecksumError, read_idx

__all__ = ["load_mnist", "fetch_mnist", "download", "find_mnist_dir", "MNIST_FILES",
           "MNIST_SHA256", "default_cache_dir"]

#: base names of the four files: (train images, train labels, test images, test labels)
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: sha256 of the original files, gzipped (as distributed) and decompressed
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz":
        "b09d8b89df4ad239afc76a323dbe9559169cd8cca365467dfe8aa1f7ca54109b",
    "train-labels-idx1-ubyte.gz":
        "c51906e7929bbf7c824fbd16019b56297269ca82cba449c5b5d59c0a02147fed",
    "t10k-images-idx3-ubyte.gz":
        "f72c2dff3457595ec2fe452d25d97b7f974a74ad5b006687704212bedd1486d8",
    "t10k-labels-idx1-ubyte.gz":
        "4baf84ddd60ae342cfdd282ec3fba3249a201a4459782165496a7cbebbe49a2e",
    "train-images-idx3-ubyte":
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte":
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte":
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte":
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: used by fetch_mnist when neither ``base_url`` nor FASTNN_MNIST_URL is given
DEFAULT_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"


def default_cache_dir() -> str:
    """``$FASTNN_DATA_DIR`` or ``$XDG_CACHE_HOME/fastnn`` (default ``~/.cache/fastnn``)."""
    env = os.environ.get("FASTNN_DATA_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastnn")


def _candidates(directory: str, base: str):
    # the common spellings: .gz or raw, and the "train-images.idx3-ubyte" variant
    dotted = base.replace("-idx", ".idx")
    for name in (base + ".gz", base, dotted + ".gz", dotted):
        yield os.path.join(directory, name)


def _locate(directory: str) -> dict | None:
    found = {}
    for key, base in MNIST_FILES.items():
        for cand in _candidates(directory, base):
            if os.path.isfile(cand):
                found[key] = cand
                break
        else:
            return None
    return found


def _known_sha(path: str) -> str | None:
    name = os.path.basename(path).replace(".idx", "-idx")
    return MNIST_SHA256.get(name)


def find_mnist_dir(path=None, cache_dir=None) -> str | None:
    """The directory holding the four MNIST files: ``path`` when given (and only it), else the
    first of ``$FASTNN_MNIST_DIR`` and the cache (``cache_dir`` or
    :func:`default_cache_dir`/mnist); None when none has them."""
    candidates = ((path,) if path is not None else
                  (os.environ.get("FASTNN_MNIST_DIR"),
                   os.path.join(cache_dir or default_cache_dir(), "mnist")))
    for d in candidates:
        if d and _locate(os.fspath(d)) is not None:
            return os.fspath(d)
    return None


def download(url: str, path, *, sha256: str | None = None, timeout: float = 60.0,
             overwrite: bool = False) -> str:
    """Download ``url`` to ``path`` atomically, checking its sha256 when given.

    The bytes go to a temporary file in the target directory and are hashed while they
    arrive; the file is renamed into place only when the download is complete and the hash
    matches, so an interrupted or corrupted download never leaves a file that looks valid.
    An existing file with the right hash is kept (no network access).

    Returns the path.
    """
    path = os.fspath(path)
    if os.path.isfile(path) and not overwrite:
        if sha256 is None:
            return path
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() == sha256.lower():
            return path
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".download-", suffix=".part", dir=directory)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                expected_len = resp.headers.get("Content-Length")
                n = 0
                for block in iter(lambda: resp.read(1 << 16), b""):
                    out.write(block)
                    h.update(block)
                    n += len(block)
            out.flush()
            os.fsync(out.fileno())
        if expected_len is not None and n != int(expected_len):
            raise OSError(f"download of {url} is incomplete: {n} of {expected_len} bytes")
        if sha256 is not None and h.hexdigest() != sha256.lower():
            raise ChecksumError(f"sha256 mismatch for {url}: expected {sha256.lower()}, got "
                                f"{h.hexdigest()}; the file was not kept")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def fetch_mnist(cache_dir=None, *, base_url: str | None = None, timeout: float = 60.0) -> str:
    """Download the four gzipped MNIST files into ``<cache_dir>/mnist`` (checked by sha256).

    Parameters
    ----------
    cache_dir : str, optional
        Default :func:`default_cache_dir` (``$FASTNN_DATA_DIR`` or ``~/.cache/fastnn``).
    base_url : str, optional
        Where the files live (``<base_url>/train-images-idx3-ubyte.gz`` ...); default
        ``$FASTNN_MNIST_URL`` or a public mirror.

    Returns the directory.
    """
    base_url = base_url or os.environ.get("FASTNN_MNIST_URL") or DEFAULT_MNIST_URL
    if not base_url.endswith("/"):
        base_url += "/"
    directory = os.path.join(os.fspath(cache_dir or default_cache_dir()), "mnist")
    for base in MNIST_FILES.values():
        name = base + ".gz"
        download(urllib.parse.urljoin(base_url, name), os.path.join(directory, name),
                 sha256=MNIST_SHA256[name], timeout=timeout)
    return directory


def load_mnist(path=None, *, dtype=np.float32, scale: bool = True, flatten: bool = True,
               verify: bool = True, download: bool = False, cache_dir=None,
               base_url: str | None = None):
    """Load MNIST (60,000 training and 10,000 test images of 28x28 handwritten digits).

    The files are looked for in ``path`` when given (an explicit path is never second-guessed),
    otherwise in ``$FASTNN_MNIST_DIR``, then the download cache;
    with ``download=True`` a missing set is fetched into the cache first (never otherwise).

    Parameters
    ----------
    path : str or os.PathLike, optional
        A directory with ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
        ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``.
    dtype : float32 or float64
    scale : bool
        Divide pixel values by 255 (to [0, 1]).
    flatten : bool
        Images as (n, 784) rows; False keeps (n, 28, 28).
    verify : bool
        Check each file's sha256 against the original MNIST files.

    Returns
    -------
    X_train (60000, 784), y_train (60000,) int64, X_test (10000, 784), y_test (10000,) int64
    """
    directory = find_mnist_dir(path, cache_dir)
    if directory is None and path is not None and not download:
        raise FileNotFoundError(
            f"no MNIST files in {os.fspath(path)!r}: expected "
            + ", ".join(b + "[.gz]" for b in MNIST_FILES.values()))
    if directory is None:
        if not download:
            raise FileNotFoundError(
                "MNIST not found: pass its directory (load_mnist(path)), set FASTNN_MNIST_DIR, "
                "or download it into the cache with load_mnist(download=True) / "
                "fastnn.datasets.fetch_mnist()")
        directory = fetch_mnist(cache_dir, base_url=base_url)
    files = _locate(directory)
    arrays = {}
    for key, f in files.items():
        expected = _known_sha(f) if verify else None
        if verify and expected is None:
            raise ChecksumError(f"no known sha256 for {f}; pass verify=False to load it anyway")
        arrays[key] = read_idx(f, sha256=expected)
    for part in ("train", "test"):
        imgs, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if imgs.ndim != 3 or labels.ndim != 1 or imgs.shape[0] != labels.shape[0]:
            raise ValueError(f"MNIST {part} files disagree: images {imgs.shape}, "
                             f"labels {labels.shape}")
    dtype = np.dtype(dtype)

    def images(a):
        out = a.astype(dtype)
        if scale:
            out /= dtype.type(255.0)
        return out.reshape(a.shape[0], -1) if flatten else out

    return (images(arrays["train_images"]), arrays["train_labels"].astype(np.int64),
            images(arrays["test_images"]), arrays["test_labels"].astype(np.int64))
