"""Image datasets: the 8x8 scikit-learn digits (offline) and MNIST from local files.

Both return flattened images scaled to ``[-1, 1]`` and dequantised (uniform noise of one
grey level added before scaling, so that the data have a density), with their labels, and
optionally subsampled to given class proportions: the setting of Carbone et al. (2023),
Sec. 5.2 (digits 2, 3 and 6 at proportions 4/7, 2/7, 1/7).
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from smc_ebm._naming import renamed
from smc_ebm.datasets._teacher import Dataset

# IDX type codes (http://yann.lecun.com/exdb/mnist/): 0x08 unsigned byte is what MNIST uses.
_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped (``.gz``) or not.

    Returns an array of the shape and dtype the file's header declares.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the header is not a valid IDX header or the payload is truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number).")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    offset = 4 + 4 * ndim
    count = int(np.prod(shape)) if ndim else 1
    if len(raw) - offset < count * dtype.itemsize:
        raise ValueError(f"{path} is truncated: header declares shape {shape}.")
    return np.frombuffer(raw, dtype, count, offset).reshape(shape)


def _dequantise(
    key: PRNGKeyArray, levels: np.ndarray, n_levels: int, dequantise: bool
) -> jnp.ndarray:
    """Integer grey levels in ``[0, n_levels)`` -> floats in ``[-1, 1]``.

    With ``dequantise``: ``x = 2 (v + u) / n_levels - 1``, ``u ~ U(0, 1)``; without:
    ``x = 2 (v + 1/2) / n_levels - 1`` (the centre of each level's bin).
    """
    v = jnp.asarray(levels, jnp.float32)
    u = jax.random.uniform(key, v.shape, jnp.float32) if dequantise else 0.5
    return 2.0 * (v + u) / n_levels - 1.0


def _select(
    key: PRNGKeyArray,
    labels_all: np.ndarray,
    labels: Sequence[int] | None,
    weights: Sequence[float] | None,
    n: int | None,
) -> np.ndarray:
    """Indices of a subsample with class proportions ``weights / sum(weights)``.

    With ``n=None`` the largest subsample that the available images allow is drawn.
    """
    if labels is None:
        labels = sorted(int(c) for c in np.unique(labels_all))
    labels = [int(c) for c in labels]
    if len(set(labels)) != len(labels) or not labels:
        raise ValueError(f"labels must be distinct and non-empty; got {labels}.")
    missing = [c for c in labels if not np.any(labels_all == c)]
    if missing:
        raise ValueError(f"no images with labels {missing} in this dataset.")
    available = np.array([int(np.sum(labels_all == c)) for c in labels])
    if weights is None:
        p = available / available.sum()
    else:
        w = np.asarray(weights, np.float64)
        if w.shape != (len(labels),) or np.any(w <= 0) or not np.all(np.isfinite(w)):
            raise ValueError(
                f"weights must be {len(labels)} positive numbers (one per label); got {weights}."
            )
        p = w / w.sum()
    n_max = int(np.floor(np.min(available / p) * (1 + 1e-9)))  # p = available / sum: exact
    if n is None:
        n = n_max
    if not 1 <= n <= n_max:
        raise ValueError(
            f"n={n} images at proportions {np.round(p, 4).tolist()} need more images than "
            f"available ({dict(zip(labels, available.tolist(), strict=True))}); at most {n_max}."
        )
    counts = np.floor(n * p).astype(int)
    counts[np.argsort(-(n * p - counts))[: n - counts.sum()]] += 1  # largest remainders
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    idx = [
        rng.choice(np.flatnonzero(labels_all == c), k, replace=False)
        for c, k in zip(labels, counts, strict=True)
    ]
    idx = np.concatenate(idx)
    return idx[rng.permutation(idx.size)]


def _dataset(key, images, labels_all, n_levels, labels, weights, n, dequantise, side, name):
    k_sel, k_noise = jax.random.split(key)
    idx = _select(k_sel, labels_all, labels, weights, n)
    flat = images.reshape(images.shape[0], -1)[idx]
    x = _dequantise(k_noise, flat, n_levels, dequantise)
    y = np.asarray(labels_all[idx], np.int32)
    classes = sorted(int(c) for c in np.unique(y))
    props = {c: float(np.mean(y == c)) for c in classes}
    info = {"labels": y, "proportions": props, "shape": (side, side), "name": name}
    return Dataset(samples=x, info=info)


def digits(
    key: PRNGKeyArray,
    labels: Sequence[int] | None = (2, 3, 6),
    weights: Sequence[float] | None = (4, 2, 1),
    *,
    n: int | None = None,
    dequantise: bool = True,
) -> Dataset:
    r"""The 8x8 scikit-learn digits, scaled to ``[-1, 1]``, at given class proportions.

    ``sklearn.datasets.load_digits`` (1797 images, about 180 per digit, grey levels
    ``0..16``; shipped with scikit-learn, no download). Each pixel value ``v`` becomes
    ``x = 2 (v + u) / 17 - 1`` with ``u ~ U(0, 1)`` (dequantisation), so ``x`` lies in
    ``[-1, 1]``. The default is the setting of Carbone et al. (2023): digits 2, 3, 6 at
    proportions 4/7, 2/7, 1/7.

    Args:
        key: PRNG key (subsample and dequantisation noise).
        labels: the digits to keep (``None``: all ten).
        weights: relative proportions, one per label (``None``: as available).
        n: number of images (default: as many as the proportions allow; 310 for the
            default 2/3/6 at 4/2/1, limited by the 177 twos).
        dequantise: add the uniform noise (otherwise use the centre of each grey level).

    Returns:
        A :class:`Dataset` with ``samples`` ``(n, 64)`` in ``[-1, 1]`` (row-major 8x8) and
        ``info = {"labels": (n,) int array, "proportions": {label: fraction},
        "shape": (8, 8), "name": "digits"}``.

    Raises:
        ValueError: unknown labels, bad weights, or more images than available.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    return _dataset(
        key,
        np.asarray(d.images, np.int32),
        np.asarray(d.target),
        17,
        labels,
        weights,
        n,
        dequantise,
        8,
        "digits",
    )


def _load_mnist_arrays(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    if path.is_file():
        if path.suffix != ".npz":
            raise ValueError(f"expected a directory of IDX files or an .npz file; got {path}.")
        with np.load(path) as z:
            keys = (f"x_{split}", f"y_{split}")
            if not all(k in z for k in keys):
                raise ValueError(f"{path} has no arrays {keys} (found {sorted(z.files)}).")
            return np.asarray(z[keys[0]]), np.asarray(z[keys[1]])
    if not path.is_dir():
        raise FileNotFoundError(
            f"MNIST not found at {path}: pass a directory holding the IDX files "
            f"({', '.join(_MNIST_FILES[split])}, optionally .gz) or an .npz file with "
            f"x_{split}/y_{split} arrays (as keras' mnist.npz)."
        )
    found = []
    for base in _MNIST_FILES[split]:
        cands = [path / base, path / f"{base}.gz"]
        cands += [path / base.replace("-idx", ".idx"), path / f"{base.replace('-idx', '.idx')}.gz"]
        hit = next((c for c in cands if c.is_file()), None)
        if hit is None:
            raise FileNotFoundError(
                f"MNIST {split} file {base}[.gz] not found in {path}. Download the four IDX "
                f"files from http://yann.lecun.com/exdb/mnist/ (or a mirror) into that folder."
            )
        found.append(read_idx(hit))
    return found[0], found[1]


@renamed(positional=("key", "labels", "weights"))
def mnist(
    path: str | os.PathLike,
    *,
    key: PRNGKeyArray,
    labels: Sequence[int] | None = (2, 3, 6),
    weights: Sequence[float] | None = (4, 2, 1),
    split: str = "train",
    n: int | None = None,
    dequantise: bool = True,
) -> Dataset:
    r"""MNIST (28x28) from local files, scaled to ``[-1, 1]``, at given class proportions.

    Nothing is downloaded. ``path`` is either a directory with the standard IDX files
    (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-...``, gzipped or
    not) or an ``.npz`` file with arrays ``x_train, y_train, x_test, y_test`` (the layout
    of keras' ``mnist.npz``). Pixel values ``v in 0..255`` become ``2 (v + u) / 256 - 1``,
    ``u ~ U(0, 1)``.

    Args:
        path: directory of IDX files, or an ``.npz`` file.
        key: PRNG key (subsample and dequantisation noise).
        labels: the digits to keep (``None``: all ten).
        weights: relative proportions, one per label (``None``: as available).
        split: ``"train"`` or ``"test"``.
        n: number of images (default: as many as the proportions allow).
        dequantise: add the uniform noise (otherwise use the centre of each grey level).

    Returns:
        A :class:`Dataset` with ``samples`` ``(n, 784)`` and ``info`` as in :func:`digits`
        (``shape`` ``(28, 28)``, ``name`` ``"mnist"``).

    Raises:
        FileNotFoundError: the path or one of the files is missing (the message says which
            files are expected).
        ValueError: bad split, labels, weights or file contents.
    """
    if split not in _MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}.")
    images, y = _load_mnist_arrays(Path(path), split)
    if images.ndim != 3 or images.shape[1] != images.shape[2] or y.shape != images.shape[:1]:
        raise ValueError(
            f"expected images (n, s, s) and labels (n,); got {images.shape} and {y.shape}."
        )
    side = int(images.shape[1])
    return _dataset(
        key,
        np.asarray(images, np.int32),
        np.asarray(y),
        256,
        labels,
        weights,
        n,
        dequantise,
        side,
        "mnist",
    )
