"""Per-task replay buffers (PEARL's RL and context buffers), numpy-backed.

Moved out of :mod:`metagrasp.policies.pearl` (which re-exports it) to keep one idea per
file; checkpoints store the buffers as tensors (``torch.load(weights_only=True)``-safe).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from metagrasp.policies.collect import Episodes


class TaskReplay:
    """One ring buffer of transitions per training task (numpy; tensors in checkpoints)."""

    def __init__(self, num_tasks: int, capacity: int, obs_dim: int, act_dim: int) -> None:
        self.capacity = capacity
        self.size = np.zeros(num_tasks, np.int64)
        self.ptr = np.zeros(num_tasks, np.int64)
        dims = {"obs": obs_dim, "actions": act_dim, "next_obs": obs_dim}
        self.data = {k: np.zeros((num_tasks, capacity, d), np.float32) for k, d in dims.items()}
        self.data["rewards"] = np.zeros((num_tasks, capacity), np.float32)
        self.data["dones"] = np.zeros((num_tasks, capacity), np.float32)

    def add(self, tasks: np.ndarray, ep: Episodes) -> None:
        """Add member ``i``'s valid steps of ``ep`` to task ``tasks[i]``."""
        fields = {
            "obs": ep.obs,
            "actions": np.clip(ep.actions, -1.0, 1.0),  # what the env executed
            "rewards": ep.rewards,
            "next_obs": ep.next_obs,
            "dones": ep.dones,
        }
        for i, task in enumerate(tasks):
            valid = ep.mask[i] > 0
            n = int(valid.sum())
            idx = (self.ptr[task] + np.arange(n)) % self.capacity
            for k, v in fields.items():
                self.data[k][task, idx] = v[i][valid]
            self.ptr[task] = (self.ptr[task] + n) % self.capacity
            self.size[task] = min(self.size[task] + n, self.capacity)

    def clear(self, tasks: np.ndarray) -> None:
        self.size[tasks] = 0
        self.ptr[tasks] = 0

    def sample(
        self, tasks: np.ndarray, n: int, rng: np.random.Generator
    ) -> dict[str, torch.Tensor]:
        """``n`` transitions (with replacement) of each task: arrays (len(tasks), n, ...)."""
        idx = rng.integers(0, self.size[tasks][:, None], (len(tasks), n))
        rows = np.asarray(tasks)[:, None]
        return {k: torch.as_tensor(v[rows, idx]) for k, v in self.data.items()}

    def state_dict(self) -> dict[str, Any]:
        used = int(self.size.max(initial=0))
        return {
            "size": torch.as_tensor(self.size),
            "ptr": torch.as_tensor(self.ptr),
            **{k: torch.as_tensor(v[:, :used]) for k, v in self.data.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size = state["size"].numpy().copy()
        self.ptr = state["ptr"].numpy().copy()
        for k, v in self.data.items():
            v[:] = 0.0
            v[:, : state[k].shape[1]] = state[k].numpy()
