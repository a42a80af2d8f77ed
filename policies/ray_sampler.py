"""Rollout workers on a Ray cluster: episodes from many machines, the learner here.

``metagrasp train ... --ray [ADDRESS]`` collects through a :class:`RaySampler`. Its
``workers`` rollout workers are Ray actors (one CPU each); worker ``w`` owns a batched
env of a contiguous slice of the members (stepped in its own process) and, while tasks
are set, those members' tasks. Each :meth:`RaySampler.sample`:

1. puts the :class:`~metagrasp.policies.sampler.Rollout` (the acting networks, without
   optimisers or replay) into the object store once with ``ray.put``;
2. asks every worker for its members' blocks, with its own noise seed for this call;
3. collects the results with ``ray.wait`` as they arrive and concatenates them in
   member order, so member ``i`` runs the task and reset stream it would run in the
   local vector env at the same seed (member ``i``'s env is seeded with
   :func:`~metagrasp.sim.vector.member_seed` ``(seed, i)`` wherever it lives).

A worker that dies (its node lost, the process killed: ``RayActorError``) is replaced by
a fresh actor for the same members (its envs reseeded, so it does not replay the dead
one's episodes), its share of the call is issued again, and the run continues; a slice
that keeps killing its workers is a :class:`~metagrasp.errors.SamplerError` after
``max_replacements`` tries. An exception *raised* in a worker (a NaN action, a broken
env) is not a death: it propagates with its own type, as it would locally.

The learner (the algorithm's update) stays in the driver process, on its CPU or its GPU
(``run.device``); rollouts carry CPU copies of the acting networks either way
(:func:`metagrasp.policies.device.cpu_copy`; docs/SCALING.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

import numpy as np

from metagrasp.errors import ConfigError, SamplerError, TaskParamError
from metagrasp.policies.base import EnvSpec
from metagrasp.policies.collect import Episodes
from metagrasp.policies.sampler import Rollout, Sampler, concat_episodes, run_blocks
from metagrasp.sim.vector import member_seed

log = logging.getLogger(__name__)

LOCAL = "local"
"""``run.ray`` value that starts a Ray instance on this machine (``--ray`` alone)."""

_CONNECT_TIMEOUT_S = 5.0


def import_ray() -> Any:
    """The ``ray`` module.

    Raises:
        SamplerError: Ray is not installed (naming the extra that installs it).
    """
    try:
        import ray
    except ImportError as exc:
        raise SamplerError(
            "collecting on Ray needs the ray package: pip install 'metagrasp[ray]' "
            "(or run without --ray to collect on this machine)"
        ) from exc
    return ray


def check_reachable(address: str, timeout_s: float = _CONNECT_TIMEOUT_S) -> None:
    """Fail fast when nothing listens at a Ray address (``ray.init`` itself retries
    for minutes before giving up).

    ``auto`` (the cluster this machine belongs to) is left to Ray.

    Raises:
        SamplerError: a malformed address, or no answer at HOST:PORT.
    """
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SamplerError(
            f"Ray address {address!r} is not HOST:PORT; pass the address `ray start --head` "
            "prints (e.g. 10.0.0.5:6379), 'auto', or no address to start Ray on this machine"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise SamplerError(
            f"cannot reach a Ray cluster at {address} ({exc}); start its head node with "
            "`ray start --head --port=6379` and pass the address it prints, or run --ray "
            "with no address to start Ray on this machine"
        ) from exc


def connect(address: str) -> bool:
    """Join the Ray cluster at ``address`` (or start one here for :data:`LOCAL`).

    Returns:
        Whether this call connected (and the caller should disconnect when done);
        ``False`` when the process was already connected (e.g. a test's ``ray.init``).

    Raises:
        SamplerError: Ray missing, or the cluster unreachable.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address == LOCAL:
        ray.init(include_dashboard=False)
        return True
    check_reachable(address)
    try:
        ray.init(address=address)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise SamplerError(
            f"could not join the Ray cluster at {address} ({exc}); check that "
            "`ray status` works on the head node and that this machine runs the same Ray "
            "and Python versions"
        ) from exc
    return True


def slice_seeds(seed: int, lo: int, hi: int, generation: int) -> list[int]:
    """Reset seeds of members ``lo..hi-1``: the local vector env's for the first worker
    of a slice, new streams for each replacement (``generation`` > 0)."""
    if generation == 0:
        return [member_seed(seed, i) for i in range(lo, hi)]
    return [
        int(np.random.SeedSequence([int(seed), i, generation]).generate_state(1)[0])
        for i in range(lo, hi)
    ]


class RolloutWorker:
    """One Ray actor: a batched env of some members, stepped in the actor's process.

    Args:
        family: task family of the env.
        split: task split the members draw from while no tasks are set.
        seeds: the members' first reset seeds (see :func:`slice_seeds`).
    """

    def __init__(self, family: str, split: str, seeds: list[int]) -> None:
        import torch

        from metagrasp.sim import make_vector_env

        torch.set_num_threads(1)  # one CPU per actor: the env and the policy share it
        self.env = make_vector_env(family, len(seeds), split=split, workers=0)
        self.env.reset(seed=seeds)  # the local env's first reset (the runner's spec reset)

    def pid(self) -> int:
        """The actor's process id (readiness check; tests kill by it)."""
        return os.getpid()

    def sample(
        self,
        rollout: Rollout,
        lo: int,
        hi: int,
        max_steps: int,
        episodes: int,
        seed: int,
        tasks: list[Any] | None,
    ) -> list[Episodes]:
        """Blocks of the actor's members, who are members ``lo..hi-1`` of the whole
        batch (their rows of the rollout's per-member inputs), with ``seed``'s noise."""
        if tasks is not None:
            self.env.set_tasks(tasks)
        return run_blocks(self.env, rollout.bind(lo, hi, seed), max_steps, episodes)


class RaySampler(Sampler):
    """Episodes from rollout workers on a Ray cluster; see the module docstring.

    Args:
        family: task family (``--task``).
        num_envs: members in all (one task each), split over the workers.
        seed: seed of the members' envs (as the local vector env's) and of the workers'
            exploration noise.
        workers: rollout workers (Ray actors of one CPU each); capped at ``num_envs``.
        address: :data:`LOCAL` to start Ray here, ``auto``, ``HOST:PORT`` of a head node
            or a ``ray://`` client address. Ignored if this process already joined Ray.
        split: task split of the members.
        max_replacements: replacements of one slice's worker within one call before
            giving up.

    Raises:
        ConfigError: ``num_envs`` or ``workers`` below 1.
        SamplerError: Ray missing, the cluster unreachable or too small.
    """

    def __init__(
        self,
        family: str,
        num_envs: int,
        seed: int = 0,
        workers: int = 2,
        address: str = LOCAL,
        split: str = "train",
        max_replacements: int = 3,
    ) -> None:
        self._actors: list[Any] = []
        self._owns_ray = False
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ConfigError(f"num_envs must be a positive integer, got {num_envs!r}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"ray workers must be an integer >= 1, got {workers!r}")
        self.family, self.split, self.seed = family, split, int(seed)
        self.num_envs = num_envs
        self.num_workers = min(workers, num_envs)
        self.max_replacements = max_replacements
        self.replacements = 0
        """Workers replaced so far (each after a death)."""
        edges = np.linspace(0, num_envs, self.num_workers + 1).round().astype(int)
        self._bounds = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        self._generation = [0] * self.num_workers
        self._tasks: list[Any] | None = None
        self._noise = np.random.SeedSequence([self.seed, 0x5A4D1E])
        self._ray = import_ray()
        self._owns_ray = connect(address)
        try:
            cpus = self._ray.cluster_resources().get("CPU", 0)
            if cpus < self.num_workers:
                raise SamplerError(
                    f"{self.num_workers} rollout workers need {self.num_workers} CPUs but the "
                    f"Ray cluster has {cpus:g}; pass fewer --ray-workers or add nodes"
                )
            self._remote = self._ray.remote(num_cpus=1)(RolloutWorker)
            self._actors = [self._start(w) for w in range(self.num_workers)]
            self._ray.get([a.pid.remote() for a in self._actors])  # envs built, or raise
        except BaseException:
            self.close()
            raise

    # --- Sampler ------------------------------------------------------------------

    def set_tasks(self, tasks: Sequence[Any]) -> None:
        if isinstance(tasks, dict) or len(tasks) != self.num_envs:
            raise TaskParamError(
                f"set_tasks needs a sequence of {self.num_envs} tasks (one per member, "
                "None = sample from the split)"
            )
        self._tasks = list(tasks)

    def sample(self, rollout: Rollout, max_steps: int, episodes: int = 1) -> list[Episodes]:
        ray = self._ray
        ref = ray.put(rollout)  # one upload of the weights, read by every worker
        seeds = self._noise.spawn(1)[0].generate_state(self.num_workers, np.uint64)
        call = (ref, max_steps, episodes, seeds)
        pending = {self._submit(w, *call): w for w in range(self.num_workers)}
        results: list[list[Episodes] | None] = [None] * self.num_workers
        deaths = [0] * self.num_workers
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            w = pending.pop(ready[0])
            try:
                results[w] = ray.get(ready[0])
            except ray.exceptions.RayActorError as exc:
                deaths[w] += 1
                lo, hi = self._bounds[w]
                if deaths[w] > self.max_replacements:
                    raise SamplerError(
                        f"rollout worker {w} (members {lo}-{hi - 1}) died "
                        f"{deaths[w]} times in one collection; the last: {exc}. Check the "
                        "nodes' logs (`ray logs`) for out-of-memory kills or crashes"
                    ) from exc
                log.warning("rollout worker %d (members %d-%d) died; replacing it", w, lo, hi - 1)
                self._replace(w)
                pending[self._submit(w, *call)] = w
            except ray.exceptions.RayTaskError as exc:
                # Raised inside the worker: surface the original type (PolicyOutputError...).
                raise exc.as_instanceof_cause() from None
        return [concat_episodes([r[e] for r in results if r is not None]) for e in range(episodes)]

    def env_spec(self, family: str) -> EnvSpec:
        """Sizes and names from a one-member env in this process (the workers' envs
        are alike; asking one would shift its members' reset streams)."""
        from metagrasp.policies.runner import env_spec
        from metagrasp.sim import make_vector_env

        env = make_vector_env(family, 1, split=self.split, seed=self.seed, workers=0)
        try:
            return env_spec(env, family)
        finally:
            env.close()

    def close(self) -> None:
        """Stop the workers; disconnect from Ray (shutting it down if it was started
        here) unless the process had joined Ray before."""
        ray = getattr(self, "_ray", None)
        for actor in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        self._actors = []
        if self._owns_ray and ray is not None:
            ray.shutdown()
            self._owns_ray = False

    # --- workers ------------------------------------------------------------------

    @property
    def actors(self) -> list[Any]:
        """The current workers' actor handles, in member order (monitoring and tests)."""
        return list(self._actors)

    @property
    def bounds(self) -> list[tuple[int, int]]:
        """Each worker's members ``(lo, hi)``."""
        return list(self._bounds)

    def _start(self, w: int) -> Any:
        lo, hi = self._bounds[w]
        seeds = slice_seeds(self.seed, lo, hi, self._generation[w])
        return self._remote.remote(self.family, self.split, seeds)

    def _replace(self, w: int) -> None:
        with contextlib.suppress(Exception):
            self._ray.kill(self._actors[w], no_restart=True)
        self._generation[w] += 1
        self.replacements += 1
        self._actors[w] = self._start(w)

    def _submit(self, w: int, ref: Any, max_steps: int, episodes: int, seeds: Any) -> Any:
        lo, hi = self._bounds[w]
        tasks = None if self._tasks is None else self._tasks[lo:hi]
        return self._actors[w].sample.remote(ref, lo, hi, max_steps, episodes, int(seeds[w]), tasks)

    def __repr__(self) -> str:
        return (
            f"RaySampler({self.family!r}, num_envs={self.num_envs}, "
            f"workers={self.num_workers}, bounds={self._bounds})"
        )
