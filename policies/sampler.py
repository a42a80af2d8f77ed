"""The sampler seam: how algorithms collect episode blocks, here or on a Ray cluster.

Every algorithm collects through a :class:`Sampler` and never asks which one it has:

* :class:`LocalSampler` wraps the batched env of this machine
  (:class:`~metagrasp.sim.vector.VectorGraspEnv` and its kin) and runs
  :func:`~metagrasp.policies.collect.collect_episodes` on it, exactly as before;
* :class:`~metagrasp.policies.ray_sampler.RaySampler` splits the members into contiguous
  slices, one per Ray actor, and concatenates the actors' episodes in member order.

What acting needs travels as a :class:`Rollout`: a module-level ``make`` function, the
algorithm (the *actor*) and per-member inputs (a CAVIA context, a PEARL latent). In this
process ``make`` gets the algorithm itself, so the local path consumes the same random
numbers in the same order as a closure over the algorithm did. Sent to a worker, the
rollout pickles a shallow copy of the algorithm without its learner-only attributes
(optimisers, replay buffers, critics: ``LEARNER_ONLY``), and the worker replaces its
random generators with fresh ones seeded per call and worker, so workers never repeat
each other's (or the driver's) exploration noise. Stateful policies (RL²'s hidden state,
RMA's history window) build their state inside ``make`` for the worker's own members.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from metagrasp.policies.base import EnvSpec
from metagrasp.policies.collect import Episodes, PolicyFn, StepHook, collect_episodes
from metagrasp.policies.device import cpu_copy


@dataclass
class BoundPolicy:
    """A policy bound to a batch of members: what one collection of blocks calls."""

    act: PolicyFn
    """``act(obs (n, o), task (n, k)) -> (actions, extras)`` of the bound members."""
    on_step: StepHook | None = None
    """Per-step hook (recurrent policies feed rewards back with it)."""
    next_episode: Callable[[list[Episodes]], None] | None = None
    """Called between consecutive blocks with the blocks so far (RL² marks the episode
    boundary and keeps the hidden state); ``None`` = blocks are independent."""


RolloutMaker = Callable[[Any, dict[str, Any], int], BoundPolicy]
"""``make(actor, per_member, n) -> BoundPolicy``: a module-level function (pickled by
name) that builds the policy of ``n`` members from the actor and their inputs."""


@dataclass
class Rollout:
    """How to act, as it is sent to rollout workers.

    Attributes:
        make: builds the bound policy; see :data:`RolloutMaker`.
        actor: the algorithm whose networks act. Pickled without the attribute names in
            its class's ``LEARNER_ONLY`` tuple.
        per_member: arrays, tensors or dicts of them with the member axis first; a
            worker gets the rows of its members.
    """

    make: RolloutMaker
    actor: Any
    per_member: dict[str, Any] = field(default_factory=dict)

    def bind(self, lo: int, hi: int, seed: int | None = None) -> BoundPolicy:
        """The policy of members ``lo..hi-1``.

        Args:
            lo: first member.
            hi: one past the last member.
            seed: ``None`` acts with the actor's own random generators (the local
                path); an int acts with fresh generators seeded from it (a worker).
        """
        actor = self.actor if seed is None else reseeded(self.actor, seed)
        return self.make(actor, _rows(self.per_member, lo, hi), hi - lo)

    def __getstate__(self) -> dict[str, Any]:
        # Only what acting needs crosses the wire; the learner stays in the driver.
        actor = copy.copy(self.actor)
        for name in getattr(type(self.actor), "LEARNER_ONLY", ()):
            setattr(actor, name, None)
        # Workers act on their CPU: a GPU learner's networks go as CPU copies.
        per_member = _detached(self.per_member)
        return {"make": self.make, "actor": cpu_copy(actor), "per_member": per_member}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def reseeded(actor: Any, seed: int) -> Any:
    """A shallow copy of ``actor`` whose torch and numpy generators are fresh and seeded
    from ``seed`` (one independent stream per generator attribute)."""
    out = copy.copy(actor)
    names = sorted(
        k for k, v in vars(actor).items() if isinstance(v, (torch.Generator, np.random.Generator))
    )
    states = np.random.SeedSequence(int(seed)).generate_state(max(len(names), 1), np.uint64)
    for name, s in zip(names, states, strict=False):
        if isinstance(getattr(actor, name), torch.Generator):
            setattr(out, name, torch.Generator().manual_seed(int(s) & 0x7FFF_FFFF_FFFF_FFFF))
        else:
            setattr(out, name, np.random.default_rng(int(s)))
    return out


def _rows(tree: Any, lo: int, hi: int) -> Any:
    """Rows ``lo:hi`` of every array/tensor in a (nested) dict; ``None`` stays."""
    if isinstance(tree, dict):
        return {k: _rows(v, lo, hi) for k, v in tree.items()}
    return None if tree is None else tree[lo:hi]


def _detached(tree: Any) -> Any:
    """Tensors without autograd history (a non-leaf tensor that requires grad cannot be
    pickled, and workers never differentiate through their inputs), in host memory."""
    if isinstance(tree, dict):
        return {k: _detached(v) for k, v in tree.items()}
    return tree.detach().cpu() if isinstance(tree, torch.Tensor) else tree


def concat_episodes(parts: Sequence[Episodes]) -> Episodes:
    """Episodes of consecutive member slices joined along the member axis, in order."""
    if len(parts) == 1:
        return parts[0]

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts], axis=0)

    names = ("obs", "actions", "rewards", "next_obs", "dones", "mask", "task", "success")
    extras = {k: np.concatenate([p.extras[k] for p in parts], axis=0) for k in parts[0].extras}
    flags = {
        k: None if any(getattr(p, k) is None for p in parts) else cat(k)
        for k in ("crushed", "gripped")
    }
    return Episodes(*(cat(n) for n in names), extras=extras, **flags)


def run_blocks(env: Any, bound: BoundPolicy, max_steps: int, episodes: int) -> list[Episodes]:
    """``episodes`` consecutive episode blocks of ``env`` with one bound policy."""
    blocks: list[Episodes] = []
    for e in range(episodes):
        if e and bound.next_episode is not None:
            bound.next_episode(blocks)
        blocks.append(collect_episodes(env, bound.act, max_steps, bound.on_step))
    return blocks


class Sampler(abc.ABC):
    """Where episode blocks come from; see the module docstring.

    Attributes:
        num_envs: members (one task each); blocks are shaped ``(num_envs, T, ...)``.
    """

    num_envs: int

    @abc.abstractmethod
    def set_tasks(self, tasks: Sequence[Any]) -> None:
        """Fix one task per member (``None`` = draw from the split at every reset); it
        takes effect at the next block and stays until changed.

        Raises:
            TaskParamError: wrong count or a malformed task.
        """

    @abc.abstractmethod
    def sample(self, rollout: Rollout, max_steps: int, episodes: int = 1) -> list[Episodes]:
        """``episodes`` consecutive blocks of one episode per member, acting with
        ``rollout`` (between blocks its ``next_episode`` hook runs)."""

    @abc.abstractmethod
    def env_spec(self, family: str) -> EnvSpec:
        """What the algorithm may know of the env (sizes, horizon, channel names)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the env or the workers."""

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LocalSampler(Sampler):
    """Episodes from a batched env on this machine (the behaviour of every algorithm
    before the seam existed: same calls, same random numbers).

    Args:
        env: a batched env with the :class:`~metagrasp.sim.vector.VectorGraspEnv`
            contract; the sampler closes it.
    """

    def __init__(self, env: Any) -> None:
        self.env = env
        self.num_envs = int(env.num_envs)

    def set_tasks(self, tasks: Sequence[Any]) -> None:
        self.env.set_tasks(tasks)

    def sample(self, rollout: Rollout, max_steps: int, episodes: int = 1) -> list[Episodes]:
        return run_blocks(self.env, rollout.bind(0, self.num_envs), max_steps, episodes)

    def env_spec(self, family: str) -> EnvSpec:
        from metagrasp.policies.runner import env_spec

        return env_spec(self.env, family)

    def close(self) -> None:
        self.env.close()

    def __repr__(self) -> str:
        return f"LocalSampler({self.env!r})"


def as_sampler(env_or_sampler: Any) -> Sampler:
    """A sampler as it is, or a batched env wrapped in a :class:`LocalSampler` (so
    algorithms, tests and tools may pass either)."""
    if isinstance(env_or_sampler, Sampler):
        return env_or_sampler
    return LocalSampler(env_or_sampler)


def make_sampler(run: dict[str, Any]) -> Sampler:
    """The sampler a resolved ``run`` config asks for: the local batched env, or Ray
    rollout workers when ``run["ray"]`` is set.

    Raises:
        SamplerError: Ray is not installed or its cluster cannot be reached.
    """
    if run.get("ray"):
        from metagrasp.policies.ray_sampler import RaySampler

        return RaySampler(
            run["task"],
            run["num_envs"],
            seed=run["seed"],
            workers=run.get("ray_workers", 2),
            address=run["ray"],
        )
    from metagrasp.sim import make_vector_env

    env = make_vector_env(
        run["task"], run["num_envs"], split="train", seed=run["seed"], workers=run["workers"]
    )
    return LocalSampler(env)
