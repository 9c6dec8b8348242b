"""The one registry of strategies and resampling schedules, by name.

``runs`` (config files), the command line, the demo, the examples and the contract test all
build strategies from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smc_ebm.smc import ESSResampling, IntervalResampling, NoResampling
from smc_ebm.strategies._cd import CD
from smc_ebm.strategies._dual import Dual
from smc_ebm.strategies._flowmc import FlowJarzynski, FlowMC
from smc_ebm.strategies._jarzynski import Jarzynski
from smc_ebm.strategies._persistent import PCD, Unweighted
from smc_ebm.strategies._score import ScoreMatching

REGISTRY: dict[str, Any] = {
    "Jarzynski": Jarzynski,
    "PCD": PCD,
    "CD": CD,
    "Unweighted": Unweighted,
    "FlowMC": FlowMC,
    "FlowJarzynski": FlowJarzynski,
    "Dual": Dual,
    "ScoreMatching": ScoreMatching,
}
"""Strategy constructors by name (the ``strategy.name`` of run configs and the CLI)."""

#: Resampling schedules by name.
RESAMPLING: dict[str, Any] = {
    "ESSResampling": ESSResampling,
    "IntervalResampling": IntervalResampling,
    "NoResampling": NoResampling,
}


def _call(section: str, fn: Any, kwargs: Mapping) -> Any:
    try:
        return fn(**kwargs)
    except TypeError as err:
        raise ValueError(f"config [{section}]: {err}") from err


def build_strategy(spec: Mapping) -> Any:
    """The strategy named by ``spec["name"]``, with the other keys as keywords.

    A ``resampling`` entry is a table with its own ``name`` (default ``ESSResampling``).
    Raises ``ValueError`` naming the bad key or name.
    """
    spec = dict(spec)
    name = spec.pop("name", None)
    ctor = REGISTRY.get(name)
    if ctor is None:
        raise ValueError(
            f"config [strategy]: unknown strategy {name!r}; choose {', '.join(REGISTRY)}."
        )
    if "resampling" in spec:
        res = dict(spec.pop("resampling"))
        rname = res.pop("name", "ESSResampling")
        rctor = RESAMPLING.get(rname)
        if rctor is None:
            raise ValueError(f"config [strategy.resampling]: unknown schedule {rname!r}.")
        spec["resampling"] = _call("strategy.resampling", rctor, res)
    return _call("strategy", ctor, spec)
