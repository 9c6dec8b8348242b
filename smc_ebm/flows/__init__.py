"""Companion normalizing flows (flowjax): built at the identity, trained by one jittable step."""

from smc_ebm.flows._flow import (
    FLOW_KINDS,
    ReplayBuffer,
    base_distribution,
    flow_log_prob,
    init_flow_optimizer,
    make_flow,
    mle_step,
    trainable,
)

__all__ = [
    "FLOW_KINDS",
    "ReplayBuffer",
    "base_distribution",
    "flow_log_prob",
    "init_flow_optimizer",
    "make_flow",
    "mle_step",
    "trainable",
]
