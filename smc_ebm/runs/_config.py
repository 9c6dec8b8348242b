"""Run configs: read, validate, and build the dataset, energy, strategy and optimizer."""

from __future__ import annotations

import copy
import tomllib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from smc_ebm._naming import OLD_NAMES, renamed
from smc_ebm.runs._files import name_problem

FORMAT_VERSION = 1
"""Version of the run-directory format written by :func:`fit_config`."""
_TOP_KEYS = {
    "name",
    "seed",
    "steps",
    "record_every",
    "batch_size",
    "chunk_size",
    "checkpoint_every",
    "dataset",
    "energy",
    "strategy",
    "optimizer",
    "diagnostics",
    "sample",
}
_DIAG_DEFAULTS = {
    "enabled": True,
    "num_chains": 128,
    "num_steps": 1000,
    "kernel": "mala",
    "step_size": None,
    "num_warmup": 0,
    "thin": 1,
}
_SAMPLE_KEYS = {"num_walkers", "num_steps", "step_size", "kernel", "num_runs"}
_SAMPLE_OLD = {"n": "num_walkers"}


def _new_names(cfg: dict) -> None:
    """Rename, in place, the sections' keys that the API renamed, with a warning.

    E.g. ``n_walkers`` -> ``num_walkers``, ``[sample] n`` -> ``num_walkers``. The warning is
    a ``FutureWarning``, shown to the command line's users (a ``DeprecationWarning`` is not).
    """
    for section in ("dataset", "energy", "strategy", "diagnostics", "sample"):
        spec = cfg.get(section)
        if not isinstance(spec, dict):
            continue
        names = {**OLD_NAMES, **(_SAMPLE_OLD if section == "sample" else {})}
        for old in [k for k in spec if k in names]:
            new = names[old]
            if new in spec:
                continue  # both given: the section's check names the unknown old key
            warnings.warn(
                f"config [{section}]: `{old}` is deprecated; use `{new}`.",
                FutureWarning,
                stacklevel=3,
            )
            spec[new] = spec.pop(old)


# ----------------------------------------------------------------------------- config
def read_config(path: str | Path) -> dict:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``, needs PyYAML) config file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist.")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as err:  # pragma: no cover - PyYAML is optional
            raise ValueError("YAML configs need PyYAML (pip install pyyaml).") from err
        cfg = yaml.safe_load(text)
    elif path.suffix == ".toml":
        try:
            cfg = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: invalid TOML: {err}") from err
    else:
        raise ValueError(f"config must be .toml, .yaml or .yml; got {path.name!r}.")
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: the config must be a table of keys.")
    cfg.setdefault("name", path.stem)
    cfg.setdefault("_base_dir", str(path.parent.resolve()))
    return cfg


def _section(cfg: Mapping, name: str, problems: list[str], required: bool = True) -> dict:
    sec = cfg.get(name)
    if sec is None:
        if required:
            problems.append(f"config: missing section [{name}].")
        return {}
    if not isinstance(sec, Mapping):
        problems.append(f"config: [{name}] must be a table; got {type(sec).__name__}.")
        return {}
    sec = dict(sec)
    if name in ("dataset", "energy", "strategy", "optimizer") and "name" not in sec:
        if not (name == "optimizer" and "per_field" in sec):
            problems.append(f"config: [{name}] needs a name.")
    return sec


def _count(where: str, key: str, value: Any, low: int, problems: list[str]) -> None:
    """A problem unless ``value`` is an integer >= ``low`` (or ``None``)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"config: {where}`{key}` must be an integer; got {value!r}.")
    elif value < low:
        problems.append(f"config: {where}`{key}` must be >= {low}; got {value!r}.")


def config_problems(cfg: Mapping) -> tuple[dict, list[str]]:
    """The config with its defaults filled in, and every problem found in it.

    Its keys, sections and counts are checked; the sections' contents are checked when they
    are built (``smc_ebm.runs._plan``).
    """
    cfg = copy.deepcopy(dict(cfg))
    _new_names(cfg)
    problems: list[str] = []
    unknown = set(cfg) - _TOP_KEYS - {"_base_dir"}
    if unknown:
        problems.append(f"config: unknown keys {sorted(unknown)}; allowed {sorted(_TOP_KEYS)}.")
    if "steps" not in cfg:
        problems.append("config: `steps` (optimizer steps) is required.")
    _count("", "steps", cfg.get("steps"), 1, problems)
    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        problems.append(f"config: `seed` must be an integer; got {seed!r}.")
    steps = cfg.get("steps")
    steps = steps if isinstance(steps, int) and steps >= 1 else 1
    cfg.setdefault("seed", 0)
    cfg.setdefault("record_every", max(1, steps // 200))
    cfg.setdefault("chunk_size", 500)
    cfg.setdefault("name", "run")
    for key in ("record_every", "chunk_size", "batch_size"):
        _count("", key, cfg.get(key), 1, problems)
    _count("", "checkpoint_every", cfg.get("checkpoint_every"), 0, problems)
    every, rec = cfg.get("checkpoint_every"), cfg.get("record_every")
    if isinstance(every, int) and isinstance(rec, int) and every > 0 and rec > 0 and every % rec:
        problems.append(
            f"config: `checkpoint_every` ({every}) must be a multiple of `record_every` ({rec})."
        )
    bad_name = name_problem(cfg["name"])
    if bad_name:
        problems.append(f"config: {bad_name}")
    for name in ("dataset", "energy", "strategy", "optimizer"):
        cfg[name] = _section(cfg, name, problems)
    diag = _section(cfg, "diagnostics", problems, required=False)
    bad = set(diag) - set(_DIAG_DEFAULTS)
    if bad:
        problems.append(f"config: unknown [diagnostics] keys {sorted(bad)}.")
    for key in ("num_chains", "num_steps", "thin"):
        _count("[diagnostics] ", key, diag.get(key), 1, problems)
    _count("[diagnostics] ", "num_warmup", diag.get("num_warmup"), 0, problems)
    cfg["diagnostics"] = {**_DIAG_DEFAULTS, **diag}
    if "sample" in cfg:
        smp = _section(cfg, "sample", problems)
        bad = set(smp) - _SAMPLE_KEYS
        if bad:
            problems.append(f"config: unknown [sample] keys {sorted(bad)}.")
        for key in ("num_walkers", "num_steps", "num_runs"):
            _count("[sample] ", key, smp.get(key), 1, problems)
        cfg["sample"] = smp
    return cfg, problems


def join_problems(problems: list[str]) -> str:
    """One message for one problem or several (each on its own line)."""
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)


def validate_config(cfg: Mapping) -> dict:
    """Check a config and fill the defaults.

    Raises ``ValueError`` naming every problem found in its keys, sections and counts
    (``smc-ebm fit`` also builds each section before training and names what fails).
    """
    cfg, problems = config_problems(cfg)
    if problems:
        raise ValueError(join_problems(problems))
    return cfg


def _call(section: str, fn: Any, kwargs: Mapping) -> Any:
    try:
        return fn(**kwargs)
    except TypeError as err:
        raise ValueError(f"config [{section}]: {err}") from err


@renamed(positional=("key", "base_dir"))
def build_dataset(spec: Mapping, *, key: Any, base_dir: str | Path = ".") -> Any:
    """The :class:`~smc_ebm.datasets.Dataset` of a ``[dataset]`` section."""
    from smc_ebm import datasets

    spec = dict(spec)
    name = spec.pop("name")
    image_shape = spec.pop("image_shape", None)
    if name == "two_mode_teacher":
        data = _call("dataset", lambda **kw: datasets.two_mode_teacher(key, **kw), spec)
    elif name == "file":
        if "path" not in spec:
            raise ValueError("config [dataset]: name = 'file' needs a path.")
        path = Path(spec.pop("path"))
        path = path if path.is_absolute() else Path(base_dir) / path
        if not path.is_file():
            raise ValueError(f"config [dataset]: no file {str(path)!r}.")
        if path.suffix == ".npy":
            arr = np.load(path)
        elif path.suffix == ".npz":
            arr = np.load(path)[spec.pop("key", "samples")]
        elif path.suffix == ".csv":
            arr = np.loadtxt(path, delimiter=",", ndmin=2)
        else:
            raise ValueError(f"config [dataset]: unsupported file type {path.suffix!r}.")
        if spec:
            raise ValueError(f"config [dataset]: unknown keys {sorted(spec)}.")
        data = datasets.Dataset(samples=np.asarray(arr, np.float32))
    else:
        raise ValueError(
            f"config [dataset]: unknown dataset {name!r}; choose 'two_mode_teacher' or 'file'."
        )
    if image_shape is not None:
        data.info["image_shape"] = tuple(int(s) for s in image_shape)
    return data


@renamed(positional=("key", "data"), n_args=2)
def build_energy(spec: Mapping, dim: int, *, key: Any, data: Any = None) -> Any:
    """The energy of an ``[energy]`` section, of dimension ``dim``."""
    import jax.numpy as jnp

    from smc_ebm import energies

    spec = dict(spec)
    name = spec.pop("name")
    if name == "GaussianMixture":
        return _call("energy", lambda **kw: energies.GaussianMixture.init(key, dim=dim, **kw), spec)
    if name == "MLP":
        return _call("energy", lambda **kw: energies.MLP(dim, key=key, **kw), spec)
    if name == "Gaussian":
        if spec:
            raise ValueError(f"config [energy]: Gaussian takes no keys; got {sorted(spec)}.")
        if data is not None:
            return energies.Gaussian.fit_to(jnp.asarray(data))
        return energies.Gaussian.standard(dim)
    raise ValueError(
        f"config [energy]: unknown energy {name!r}; choose GaussianMixture, MLP or Gaussian."
    )


def build_strategy(spec: Mapping) -> Any:
    """The strategy of a ``[strategy]`` section (:func:`smc_ebm.strategies.build_strategy`)."""
    from smc_ebm import strategies

    return strategies.build_strategy(spec)


def build_optimizer(spec: Mapping) -> Any:
    """An optax transformation from an ``[optimizer]`` section (``per_field`` allowed)."""
    import optax

    from smc_ebm import optim

    spec = dict(spec)
    if "per_field" in spec:
        fields = spec.pop("per_field")
        default = spec.pop("default", None)
        if spec:
            raise ValueError(f"config [optimizer]: with per_field, unknown keys {sorted(spec)}.")
        per = {k: build_optimizer(v) for k, v in fields.items()}
        return optim.by_field(None if default is None else build_optimizer(default), **per)
    name = spec.pop("name")
    fn = getattr(optax, name, None)
    if fn is None or not callable(fn):
        raise ValueError(f"config [optimizer]: optax has no optimizer {name!r}.")
    return _call("optimizer", fn, spec)


def _nearest_mode_weight(center: Any) -> Any:
    import jax.numpy as jnp

    def weight(energy: Any) -> Any:
        idx = jnp.argmin(jnp.sum((energy.means - center) ** 2, axis=-1))
        return energy.weights[idx]

    return weight


def build_metrics(data: Any, energy: Any) -> tuple[dict, list[float] | None]:
    """Metrics that apply: the exact KL (teacher and exact log Z known) and mode weights."""
    import jax.numpy as jnp

    from smc_ebm import metrics
    from smc_ebm.energies import GaussianMixture, has_log_partition

    out: dict[str, Any] = {}
    targets = None
    if data.log_prob is not None and has_log_partition(energy):
        out["kl"] = metrics.exact_kl(data.samples, data.log_prob)
    means = data.info.get("means")
    if means is not None and isinstance(energy, GaussianMixture):
        for k in range(means.shape[0]):
            out[f"weight_{k}"] = _nearest_mode_weight(jnp.asarray(means[k]))
        weights = data.info.get("weights")
        targets = None if weights is None else [float(w) for w in np.asarray(weights)]
    return out, targets


# ----------------------------------------------------------------------------- fit
