"""Checkpoints of ``fit`` on disk, and the checks that a resumed run continues the same run.

A checkpoint is a directory holding, for one step ``k``, the parameters, optimizer state and
strategy state (equinox serialisation), the history (``.npz``) and ``manifest.json``: the format
version, the step, the key, the strategy's type and repr, the optimizer's type, the sizes, the
structures of the parameters and optimizer state, and the name and sha256 of every file.

Writes are atomic and the manifest comes last: each file is written under a name that holds its
step, through a temporary file, ``fsync`` and ``os.replace``; then the manifest, the same way;
then the files that the new manifest does not name are removed. A crash at any point leaves the
previous manifest pointing at its own, complete files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from smc_ebm.energies import split_energy

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class Start(NamedTuple):
    """Where a resumed ``fit`` starts: the carry's pieces, the step and the earlier records."""

    params: Any
    opt_state: Any
    state: Any
    step: int
    history: dict[str, np.ndarray]
    traces: dict[str, np.ndarray] | None
    key: Any


# --------------------------------------------------------------------------- compatibility
def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # arrays (ambiguous truth value), modules holding arrays
        la, ta = jax.tree.flatten(a)
        lb, tb = jax.tree.flatten(b)
        return ta == tb and all(
            np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=False)
        )


def strategy_differences(old: Any, new: Any) -> list[str]:
    """The fields (or the type) in which two strategies differ."""
    if type(old) is not type(new):
        return [f"type {type(old).__name__} != {type(new).__name__}"]
    if not dataclasses.is_dataclass(old):
        return [] if _same(old, new) else ["value"]
    return [
        f"{f.name}: {getattr(old, f.name)!r} != {getattr(new, f.name)!r}"
        for f in dataclasses.fields(old)
        if not _same(getattr(old, f.name), getattr(new, f.name))
    ]


def describe(tree: Any) -> dict[str, Any]:
    """Structure and leaf shapes/dtypes of a pytree (JSON-friendly, comparable)."""
    leaves, treedef = jax.tree.flatten(tree)
    return {
        "treedef": re.sub(r" at 0x[0-9a-f]+", "", str(treedef)),
        "leaves": [[list(jnp.shape(x)), str(jnp.result_type(x))] for x in leaves],
    }


def strategy_repr(strategy: Any) -> str:
    """``repr`` without memory addresses (lambdas, functions), comparable across processes."""
    return re.sub(r" at 0x[0-9a-f]+", "", repr(strategy))


def check_compatible(what: str, old: Any, new: Any) -> None:
    """``ValueError`` naming ``what`` when the descriptions ``old`` and ``new`` differ."""
    if old != new:
        raise ValueError(
            f"cannot resume: the {what} differs from the resumed run's ({old!r} != {new!r})."
        )


def check_result(resume: Any, params: Any, strategy: Any, opt_like: Any, dim: int) -> None:
    """The checks of ``fit(resume=result)``: same strategy, energy, optimizer and sizes."""
    diff = strategy_differences(resume.strategy, strategy)
    if diff:
        raise ValueError("cannot resume: the strategy differs from the run's: " + "; ".join(diff))
    old_params, _ = split_energy(resume.energy)
    check_compatible("energy structure", describe(old_params), describe(params))
    check_compatible("optimizer state structure", describe(resume.opt_state), describe(opt_like))
    check_compatible("walkers' dimension", int(np.shape(resume.walkers)[-1]), dim)


def run_manifest(strategy, optimizer, opt_like, params, dim) -> dict[str, Any]:
    """What a checkpoint records of the run, and a resumed run must match."""
    x_like = getattr(strategy, "num_walkers", None)
    return {
        "strategy_type": f"{type(strategy).__module__}.{type(strategy).__qualname__}",
        "strategy": strategy_repr(strategy),
        "optimizer_type": f"{type(optimizer).__module__}.{type(optimizer).__qualname__}",
        "energy_structure": describe(params),
        "optimizer_state": describe(opt_like),
        "num_walkers": int(x_like) if isinstance(x_like, int) else None,
        "dim": int(dim),
    }


def state_like(strategy, key, energy, data, log_Z0):
    """The strategy state's structure (what a checkpoint's state is read into)."""
    try:
        return jax.eval_shape(lambda k: strategy.init_state(k, energy, data, log_Z0), key)
    except Exception:  # an init that needs concrete values (host checks): run it
        return strategy.init_state(key, energy, data, log_Z0)


def same_key(a, b) -> bool:
    def raw(k):
        k = jnp.asarray(k) if not hasattr(k, "dtype") else k
        return np.asarray(jax.random.key_data(k) if is_key(k) else k)

    return np.array_equal(raw(a), raw(b))


# --------------------------------------------------------------------------- files
def sha256(data: bytes) -> str:
    """The hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


TMP_SUFFIX = ".tmp"


def write_atomic(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; return its sha256.

    A temporary file, fsync, ``os.replace``, then an fsync of the folder: a crash leaves the
    old file or the new one, never a part of one.
    """
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return sha256(data)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _raw(tree: Any) -> Any:
    """Typed PRNG keys as their ``uint32`` data (what ``np.save`` can write)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if is_key(x) else x, tree)


def _serialise(tree: Any) -> bytes:
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, _raw(tree))
    return buf.getvalue()


def _deserialise(data: bytes, like: Any) -> Any:
    raw_like = jax.eval_shape(_raw, like)
    raw = eqx.tree_deserialise_leaves(io.BytesIO(data), raw_like)
    return jax.tree.map(
        lambda r, x: jax.random.wrap_key_data(r, impl=jax.random.key_impl(x)) if is_key(x) else r,
        raw,
        like,
    )


def _key_entry(key: Any) -> dict[str, Any]:
    return {
        "impl": str(jax.random.key_impl(key)),
        "data": np.asarray(jax.random.key_data(key)).tolist(),
    }


def save(path: Any, start: Start, manifest: dict[str, Any]) -> None:
    """Write ``start`` (the state after ``start.step`` steps) as the checkpoint at ``path``."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    tag = f"{start.step:09d}"
    hist = io.BytesIO()
    np.savez(hist, **start.history, **{f"trace/{k}": v for k, v in (start.traces or {}).items()})
    blobs = {
        f"params-{tag}.eqx": _serialise(start.params),
        f"opt_state-{tag}.eqx": _serialise(start.opt_state),
        f"state-{tag}.eqx": _serialise(start.state),
        f"history-{tag}.npz": hist.getvalue(),
    }
    for name, data in blobs.items():
        write_atomic(root / name, data)
    full = {
        "format_version": FORMAT_VERSION,
        "step": int(start.step),
        "key": _key_entry(start.key),
        **manifest,
        "files": {name: sha256(data) for name, data in blobs.items()},
    }
    write_atomic(root / MANIFEST, json.dumps(full, indent=1).encode())
    for old in root.iterdir():  # the previous checkpoint's files
        if old.name != MANIFEST and old.name not in blobs:
            old.unlink()


def load(path: Any, manifest: dict[str, Any], params: Any, opt_like: Any, state_like: Any) -> Start:
    """Read the checkpoint at ``path``; ``manifest`` holds what this run expects of it.

    Raises ``ValueError`` naming the file whose checksum does not match, or the entry of the
    manifest (strategy, optimizer, sizes, structures) that differs from this run's.
    """
    root = Path(path)
    try:
        stored = json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        raise ValueError(f"no checkpoint at {root} ({MANIFEST} is missing).") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"corrupted checkpoint file {root / MANIFEST}: {err}") from None
    if stored.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {root}: format version {stored.get('format_version')!r}, "
            f"this version reads {FORMAT_VERSION}."
        )
    blobs = {}
    for name, digest in stored["files"].items():
        try:
            data = (root / name).read_bytes()
        except FileNotFoundError:
            raise ValueError(f"checkpoint file {root / name} is missing.") from None
        if sha256(data) != digest:
            raise ValueError(
                f"corrupted checkpoint file {root / name}: its sha256 does not match the manifest."
            )
        blobs[name.split("-")[0]] = data
    for entry, value in manifest.items():
        check_compatible(entry.replace("_", " "), stored.get(entry), value)
    key_entry = stored["key"]
    key = jax.random.wrap_key_data(
        jnp.asarray(key_entry["data"], jnp.uint32), impl=key_entry["impl"]
    )
    with np.load(io.BytesIO(blobs["history"])) as npz:
        arrays = {k: npz[k] for k in npz.files}
    traces = {k[6:]: v for k, v in arrays.items() if k.startswith("trace/")} or None
    history = {k: v for k, v in arrays.items() if not k.startswith("trace/")}
    return Start(
        params=_deserialise(blobs["params"], params),
        opt_state=_deserialise(blobs["opt_state"], opt_like),
        state=_deserialise(blobs["state"], state_like),
        step=int(stored["step"]),
        history=history,
        traces=traces,
        key=key,
    )
