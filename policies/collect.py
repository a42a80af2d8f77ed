"""Collecting whole episodes from a batched env, one episode per member, in lockstep.

Meta-RL thinks in episodes of a task ("adapt on k episodes, then act"), so the unit of
collection is an *episode block*: reset every member, step all of them until every
member's episode has ended, and return arrays shaped ``(members, T, ...)`` with a mask
of valid steps. Members whose episode ends early (a crushed or dropped object) are
auto-reset by the env; the steps after their end are masked out and discarded, and the
next block starts with an explicit reset that keeps every member's task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metagrasp.errors import MetagraspError

PolicyFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, dict[str, np.ndarray]]]
"""``policy(obs (n, o), task (n, k)) -> (actions (n, a), extras {name: (n, ...)})``."""


class PolicyOutputError(MetagraspError, FloatingPointError):
    """A policy produced NaN/inf actions: the network or its inputs are broken."""


@dataclass
class Episodes:
    """One episode per member, padded to the longest (``T`` = the env's horizon)."""

    obs: np.ndarray
    """(n, T, obs_dim) observation at each step."""
    actions: np.ndarray
    """(n, T, act_dim) action taken (in [-1, 1])."""
    rewards: np.ndarray
    """(n, T) reward of each step."""
    next_obs: np.ndarray
    """(n, T, obs_dim) observation after each step (the final one at the episode end)."""
    dones: np.ndarray
    """(n, T) 1.0 where the episode *terminated* at this step (no bootstrapping)."""
    mask: np.ndarray
    """(n, T) 1.0 for steps that belong to the episode."""
    task: np.ndarray
    """(n, task_dim) privileged task vector (analysis and oracles only)."""
    success: np.ndarray
    """(n,) success flag at the episode's last step."""
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    """Per-step policy outputs, e.g. ``logp`` and ``value``: (n, T, ...)."""
    crushed: np.ndarray | None = None
    """(n,) whether the object was crushed during the episode; ``None`` for families
    without a crush limit (point-nav)."""
    gripped: np.ndarray | None = None
    """(n,) whether both pads ever squeezed the object (the env's ``grip_force`` > 0, a
    servo's load on a robot); ``None`` for families without a gripper."""

    @property
    def returns(self) -> np.ndarray:
        """(n,) undiscounted episode return."""
        return (self.rewards * self.mask).sum(axis=1)

    @property
    def lengths(self) -> np.ndarray:
        """(n,) episode length in steps."""
        return self.mask.sum(axis=1).astype(np.int64)

    @property
    def env_steps(self) -> int:
        """Valid steps in the block (what the training budget counts)."""
        return int(self.mask.sum())

    def select(self, members: np.ndarray | slice) -> Episodes:
        """The episodes of some members."""
        return Episodes(
            obs=self.obs[members],
            actions=self.actions[members],
            rewards=self.rewards[members],
            next_obs=self.next_obs[members],
            dones=self.dones[members],
            mask=self.mask[members],
            task=self.task[members],
            success=self.success[members],
            extras={k: v[members] for k, v in self.extras.items()},
            crushed=None if self.crushed is None else self.crushed[members],
            gripped=None if self.gripped is None else self.gripped[members],
        )


StepHook = Callable[[dict[str, np.ndarray]], None]
"""Called after every env step with ``obs``, ``actions``, ``rewards``, ``next_obs``
(the final observation where an episode ended), ``dones`` (terminated) and ``mask``."""


def collect_episodes(
    env: Any, policy: PolicyFn, max_steps: int, on_step: StepHook | None = None
) -> Episodes:
    """Run one episode on every member of ``env`` (tasks as set on the env).

    Args:
        env: a batched env with the :class:`~metagrasp.sim.vector.VectorGraspEnv`
            contract (same-step auto-reset, ``final_obs`` / ``final_info``).
        policy: maps observations and task vectors to actions and per-step extras.
        max_steps: the env's episode horizon ``T``.
        on_step: optional per-step hook (recurrent policies feed rewards back with it).

    Raises:
        PolicyOutputError: the policy returned NaN or inf actions (nothing is stepped).
    """
    obs, info = env.reset()
    n = obs.shape[0]
    task = np.asarray(info["task"], np.float32)
    o_buf = np.zeros((n, max_steps, obs.shape[1]), np.float32)
    no_buf = np.zeros_like(o_buf)
    a_buf: np.ndarray | None = None
    r_buf = np.zeros((n, max_steps), np.float32)
    d_buf = np.zeros((n, max_steps), np.float32)
    m_buf = np.zeros((n, max_steps), np.float32)
    success = np.zeros(n, bool)
    crushed = np.zeros(n, bool) if "crushed" in info else None
    gripped = np.zeros(n, bool) if "grip_force" in info else None
    extras: dict[str, np.ndarray] = {}
    alive = np.ones(n, bool)
    for t in range(max_steps):
        actions, ext = policy(obs, task)
        actions = np.asarray(actions, np.float32)
        if not np.all(np.isfinite(actions)):
            bad = np.nonzero(~np.isfinite(actions).all(axis=1))[0].tolist()
            raise PolicyOutputError(
                f"the policy returned NaN/inf actions for member(s) {bad} at step {t}; "
                "check the checkpoint (a diverged run) and the observation normalizer"
            )
        if a_buf is None:
            a_buf = np.zeros((n, max_steps, actions.shape[1]), np.float32)
        for k, v in ext.items():
            if k not in extras:
                extras[k] = np.zeros((n, max_steps, *np.shape(v)[1:]), np.float32)
            extras[k][:, t] = v
        o_buf[:, t] = obs
        a_buf[:, t] = actions
        m_buf[:, t] = alive
        nxt, rew, term, trunc, info = env.step(actions)
        r_buf[:, t] = rew * alive
        ended = (np.asarray(term) | np.asarray(trunc)) & alive
        no_buf[:, t] = nxt
        if gripped is not None:
            # Ended members' info is already the next episode's: read their final info.
            force = np.asarray(info["grip_force"], np.float64).copy()
            if ended.any():
                force[ended] = np.asarray(info["final_info"]["grip_force"], np.float64)[ended]
            gripped |= (force > 0) & alive
        if ended.any():
            final_obs = info["final_obs"]
            no_buf[ended, t] = final_obs[ended]
            d_buf[ended, t] = np.asarray(term, np.float32)[ended]
            success[ended] = np.asarray(info["final_info"]["success"], bool)[ended]
            if crushed is not None:
                crushed[ended] = np.asarray(info["final_info"]["crushed"], bool)[ended]
        if on_step is not None:
            on_step(
                {
                    "obs": obs,
                    "actions": actions,
                    "rewards": r_buf[:, t],
                    "next_obs": no_buf[:, t],
                    "dones": d_buf[:, t],
                    "mask": m_buf[:, t],
                }
            )
        alive &= ~ended
        obs = nxt
        if not alive.any():
            break
    assert a_buf is not None
    if alive.any():
        # Horizon reached without the env truncating (a horizon shorter than the env's):
        # the last step's success flag stands for the episode.
        success[alive] = np.asarray(info["success"], bool)[alive]
        if crushed is not None:
            crushed[alive] = np.asarray(info["crushed"], bool)[alive]
    return Episodes(
        o_buf, a_buf, r_buf, no_buf, d_buf, m_buf, task, success, extras, crushed, gripped
    )


def tile_task(task: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Per-member task vectors (n, k) repeated over the time axis of ``like`` (n, T, o)."""
    return np.broadcast_to(task[:, None, :], (*like.shape[:2], task.shape[-1]))


def episode_metrics(blocks: list[Episodes]) -> dict[str, float]:
    """Mean return, success and length over the collected episodes, plus env steps."""
    return {
        "return": float(np.mean([b.returns.mean() for b in blocks])),
        "success": float(np.mean([b.success.mean() for b in blocks])),
        "episode_length": float(np.mean([b.lengths.mean() for b in blocks])),
        "env_steps": float(sum(b.env_steps for b in blocks)),
    }
