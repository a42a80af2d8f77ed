"""Untrained bundles for tests: an algorithm's export plan written with the metadata the
exporter stamps from the env spec (no run, no parity checks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metagrasp.actions import EE_ACTION_NAMES, OBS_NAMES
from metagrasp.export.metadata import env_facts
from metagrasp.export.writer import write_bundle
from metagrasp.policies.base import EnvSpec

GRASP_SPEC = EnvSpec("grasp-lift", 33, 6, 11, 100, OBS_NAMES, EE_ACTION_NAMES)
"""The grasp-lift env as a run records it (obs, actions, task vector, episode length)."""


def write_plan(plan: Any, spec: EnvSpec, path: Path | str, **adaptation: Any) -> str:
    """Write ``plan`` as a bundle at ``path``; ``adaptation`` adds to the plan's settings
    (e.g. ``reward_free=True``). Returns the policy file."""
    meta = {
        "algorithm": plan.algorithm,
        "obs_names": list(spec.obs_names),
        "action_names": list(spec.action_names),
        "adaptation": {**adaptation, **plan.adaptation},
        "exploration": plan.exploration,
        **env_facts(spec),
    }
    write_bundle(plan, meta, path)
    return str(path)


def cavia_bundle(path: Path | str, seed: int = 0) -> str:
    """A small untrained CAVIA grasp bundle (gradient adaptation that needs rewards and
    ``explore``), its weights shrunk so the untrained arm moves gently."""
    import torch

    from metagrasp.policies.cavia import CAVIA, CAVIAConfig

    algo = CAVIA(CAVIAConfig(inner_steps=1), GRASP_SPEC, seed)
    with torch.no_grad():
        for p in algo.net.parameters():
            p.mul_(0.1)
    return write_plan(algo.export_modules(), GRASP_SPEC, path)


def grip_bundle(path: Path | str) -> str:
    """A small untrained sac-grip bundle: the grip search, adapting on outcome flags."""
    from metagrasp.policies.grip_search import GripSearch, GripSearchConfig

    plan = GripSearch(GripSearchConfig(hidden=(16,)), GRASP_SPEC, 0).export_modules()
    return write_plan(plan, GRASP_SPEC, path)
