"""Success rate of an exported bundle in the simulator, through the device runtime.

:class:`BundleAgent` puts a loaded :class:`~metagrasp.adapt.runtime.PolicyBundle` behind
the algorithm contract of :mod:`metagrasp.policies.base`, so the meta-test protocol of
:mod:`metagrasp.policies.evaluate` runs the deployed graphs exactly as it runs a trained
algorithm. ``metagrasp export --fp16/--int8`` compares the quantised bundle with the
fp32 one this way, on the same tasks and seeds (a paired comparison).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from metagrasp.adapt.runtime import PolicyBundle, load_bundle


class BundleAgent:
    """A bundle with the meta-test side of the algorithm contract."""

    def __init__(self, bundle: PolicyBundle, seed: int = 0) -> None:
        self.bundle = bundle
        self.rng = np.random.default_rng(seed)

    def init_state(self, n: int) -> Any:
        return self.bundle.init_state(n)

    def act(
        self, obs: np.ndarray, task: np.ndarray, state: Any, deterministic: bool = False
    ) -> tuple[np.ndarray, Any]:
        task = task if self.bundle.task_names else None
        if deterministic or self.bundle.metadata.get("exploration") != "gaussian":
            return self.bundle.act(obs, state, task)
        _, sample, state = self.bundle.explore(obs, state, self.rng, task)
        return sample, state

    def observe(self, state: Any, step: dict[str, np.ndarray]) -> Any:
        return self.bundle.observe(state, step["rewards"], step["dones"])

    def adapt(self, state: Any, episodes: list[Any]) -> Any:
        fields = ("obs", "actions", "rewards", "next_obs", "dones", "mask")
        return self.bundle.adapt(state, [{k: getattr(ep, k) for k in fields} for ep in episodes])


def success_rate(
    path: str | Path,
    spec: Any,
    episodes_per_task: int = 0,
    seeds: tuple[int, ...] = (0,),
    split: str = "test",
    workers: int | None = None,
) -> dict[str, Any]:
    """Deterministic success of a bundle on a split (after 0..K adaptation episodes).

    Returns:
        ``success`` and ``return`` (means over every episode), ``episodes`` and the
        per-k success rates.
    """
    from metagrasp.policies.evaluate import meta_test

    agent = BundleAgent(load_bundle(path))
    raw = meta_test(
        agent,
        spec,
        split,
        episodes_per_task=episodes_per_task,
        seeds=seeds,
        workers=workers,
        deterministic=True,
    )
    succ = raw["success"]
    return {
        "success": float(succ.mean()),
        "return": float(raw["returns"].mean()),
        "episodes": int(succ.size),
        "per_k": [float(succ[:, :, k].mean()) for k in range(succ.shape[2])],
    }
