"""2D point-robot navigation: the cheap published meta-RL sanity benchmark.

A point starts at (0, 0) and moves by a velocity command; each task is a hidden goal on
the upper half of the unit circle. It is the "point robot" of PEARL (Rakelly et al.,
2019), the setting MAML-style and context-based methods are usually checked on before
anything expensive.

What this module follows, from PEARL's code (``katerakelly/oyster``,
``rlkit/envs/point_robot.py``: ``SparsePointEnv``; ``configs/sparse-point-robot.json``):

* Goals at radius 1, angle in [0, pi]. PEARL uses 100 fixed goals at
  ``np.linspace(0, pi, 100)`` (shuffled with seed 1337; 80 train, 20 eval); here ``train``
  draws the angle uniformly from [0, pi] and ``test``/``hard`` are fixed lists.
* Start at (0, 0) every episode; observation = position (2 floats, the goal is hidden).
* Action: PEARL's env takes a displacement in [-0.1, 0.1]^2 and its ``NormalizedBoxEnv``
  wrapper maps the policy's [-1, 1]^2 onto it with a per-axis clip. Here the env takes
  [-1, 1]^2, clips per axis and moves by 0.1 x action: the same map.
* Horizon ``max_path_length`` = 20 steps; episodes never end early.
* Dense reward (``point-nav``): ``-||pos - goal||_2`` after the move. This is
  ``SparsePointEnv.step``'s returned reward, the one PEARL's SAC critic trains on.
* Sparse reward (``point-nav-sparse``): ``SparsePointEnv``'s ``info["sparse_reward"]``,
  i.e. ``1 - d`` when the distance ``d <= goal_radius`` (0.2, boundary included; PEARL
  masks ``r >= -goal_radius``), else 0. So it is *not* ``1 - d / 0.2``: inside the radius
  the reward lies in [0.8, 1]. PEARL uses it for the encoder's context and for every
  reported return (``sparse_rewards: 1``) while the critic keeps the dense reward; an
  algorithm that wants that split can rebuild the dense reward from the observation and
  ``info["task"]`` (the goal).

Differences from PEARL, on purpose: continuous train goals, fixed ``test``/``hard``
lists (so the family has the grasp families' split names), ``info["success"]``
(distance <= ``goal_radius`` at the step), and an exact 0.0 (PEARL's mask gives -0.0).

Splits: ``train`` = angle ~ U[0, pi]; ``test`` = 40 angles drawn from U[0, pi] with a
fixed seed; ``hard`` = 40 angles in the two end bands [0, 0.15 pi] U [0.85 pi, pi] (goals
near the x axis: per-axis clipping makes them the slowest to reach; the straight-line
oracle needs 7-8 steps to get within 0.2 there, 6 near the diagonal). Unlike the grasp
splits, ``test`` and ``hard`` lie inside the ``train`` support: this benchmark tests
adaptation, not extrapolation.

:class:`VectorPointNavEnv` is a pure-numpy batch with the public contract of
:class:`~metagrasp.sim.vector.VectorGraspEnv`; it runs the same step arithmetic as
:class:`PointNavEnv` (:func:`_advance`), so N members equal N single envs bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from metagrasp.errors import ConfigError, TaskParamError, UnknownNameError
from metagrasp.sim.tasks import SPLITS, check_reset_options, check_split
from metagrasp.sim.vector import _SAME_STEP, begin_vector_reset

OBS_NAMES: tuple[str, ...] = ("x", "y")
"""Observation layout: the point's position."""
ACTION_NAMES: tuple[str, ...] = ("vx", "vy")
"""Action layout: velocity command per axis, in [-1, 1] (x ``ACTION_SCALE`` per step)."""
PRIVILEGED_NAMES: tuple[str, ...] = ("goal_x", "goal_y")
"""Layout of the privileged task vector (``info["task"]``)."""
REWARDS: tuple[str, ...] = ("dense", "sparse")
REWARD_TERM: dict[str, str] = {"dense": "distance", "sparse": "goal"}
"""The single key of ``info["reward_terms"]`` for each reward variant."""

ACTION_SCALE = 0.1
"""Displacement per step at action = +-1, per axis."""
GOAL_DISTANCE = 1.0
"""Distance of every goal from the start."""
HARD_BAND = 0.15 * math.pi
"""Width of each end band of the ``hard`` split (rad)."""
NUM_VAL_TASKS = 40
NUM_TEST_TASKS = 40
NUM_HARD_TASKS = 40
VAL_SEED = 50_005
TEST_SEED = 30_003
HARD_SEED = 40_004

SPLIT_NOTES: dict[str, str] = {
    "train": "distribution: goal angle ~ U[0, pi] on the unit half circle",
    "val": f"{NUM_VAL_TASKS} fixed goals drawn from the train distribution (seed {VAL_SEED})",
    "test": f"{NUM_TEST_TASKS} fixed goals, angles drawn from U[0, pi] (seed {TEST_SEED})",
    "hard": f"{NUM_HARD_TASKS} fixed goals in the end bands [0, 0.15 pi] U [0.85 pi, pi]",
}
"""One line per split for ``metagrasp envs``."""


# --- tasks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PointNavTask:
    """One task: a goal on the unit half circle, hidden from the agent.

    Instances are validated at construction; use :meth:`from_dict` for untrusted input.
    """

    goal_angle: float
    """Goal direction (rad) in [0, pi]; the goal is ``(cos a, sin a)``. Hidden."""
    task_id: str = ""
    """Free-form label, e.g. ``test-007`` for fixed split tasks."""

    def __post_init__(self) -> None:
        a = self.goal_angle
        if isinstance(a, bool) or not isinstance(a, (int, float, np.integer, np.floating)):
            raise TaskParamError(
                f"task field 'goal_angle'={a!r} must be a number in [0, pi] rad "
                f"(got {type(a).__name__})"
            )
        if not (math.isfinite(a) and 0.0 <= a <= math.pi):
            raise TaskParamError(f"task field 'goal_angle'={a!r} is outside [0, pi] rad")
        if not isinstance(self.task_id, str):
            raise TaskParamError(
                f"task field 'task_id'={self.task_id!r} must be a string "
                f"(got {type(self.task_id).__name__})"
            )
        # Plain float, so to_dict() is JSON-ready and equal tasks compare equal.
        object.__setattr__(self, "goal_angle", float(a))

    @property
    def goal(self) -> np.ndarray:
        """The goal position (x, y), float64."""
        return np.array([math.cos(self.goal_angle), math.sin(self.goal_angle)]) * GOAL_DISTANCE

    def privileged_vector(self) -> np.ndarray:
        """The hidden parameters for oracles and analysis: the goal (x, y), float32."""
        return self.goal.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PointNavTask:
        """Build from a (possibly user-written) dict, naming any bad field.

        Raises:
            TaskParamError: unknown fields, wrong types or values out of range.
        """
        if not isinstance(data, dict):
            raise TaskParamError(f"task must be a dict of fields, got {type(data).__name__}")
        names = sorted(f.name for f in dataclasses.fields(cls))
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise TaskParamError(
                f"unknown point-nav task field(s) {unknown}; allowed fields: {names} "
                "(goal_angle in [0, pi] rad)"
            )
        if "goal_angle" not in data:
            raise TaskParamError("task field 'goal_angle' is missing (a number in [0, pi] rad)")
        return cls(**data)

    def replace(self, **changes: Any) -> PointNavTask:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _angle_task(angle: float, task_id: str = "") -> PointNavTask:
    # Draws can land a rounding error outside [0, pi] after pi - x; clamp, then validate.
    return PointNavTask(min(max(float(angle), 0.0), math.pi), task_id)


@functools.cache
def split_tasks(split: str) -> tuple[PointNavTask, ...]:
    """The fixed tasks of ``val``, ``test`` or ``hard`` (from fixed seeds, deterministic).

    Raises:
        UnknownNameError: for ``train`` (a distribution, not a list) or an unknown split.
    """
    check_split(split)
    if split == "train":
        raise UnknownNameError(
            "split 'train' is a distribution: use sample_task(rng, 'train'), or the fixed "
            "draw from it, split 'val'; fixed task lists exist for 'val', 'test' and 'hard'"
        )
    if split == "val":
        rng = np.random.default_rng(VAL_SEED)
        angles = rng.uniform(0.0, math.pi, NUM_VAL_TASKS)
    elif split == "test":
        rng = np.random.default_rng(TEST_SEED)
        angles = rng.uniform(0.0, math.pi, NUM_TEST_TASKS)
    else:
        rng = np.random.default_rng(HARD_SEED)
        offsets = rng.uniform(0.0, HARD_BAND, NUM_HARD_TASKS)
        right = rng.random(NUM_HARD_TASKS) < 0.5
        angles = np.where(right, offsets, math.pi - offsets)
    return tuple(_angle_task(a, f"{split}-{i:03d}") for i, a in enumerate(angles))


def sample_task(rng: np.random.Generator, split: str = "train") -> PointNavTask:
    """Draw a task of ``split`` (pure: the result depends only on ``rng``'s state).

    ``train`` draws the angle from U[0, pi]; ``val``/``test``/``hard`` pick one of the
    split's fixed tasks uniformly.
    """
    check_split(split)
    if split == "train":
        return _angle_task(rng.uniform(0.0, math.pi))
    tasks = split_tasks(split)
    return tasks[int(rng.integers(len(tasks)))]


def _parse_task(task: Any, where: str) -> PointNavTask:
    if isinstance(task, dict):
        return PointNavTask.from_dict(task)
    if not isinstance(task, PointNavTask):
        raise TaskParamError(f"{where} must be PointNavTask or dict, got {type(task).__name__}")
    return task


# --- configuration ----------------------------------------------------------------------


@dataclass
class PointNavConfig:
    """Configuration of one point-navigation environment."""

    reward: str = "dense"
    """``dense``: -distance to the goal each step; ``sparse``: PEARL's 1 - distance inside
    ``goal_radius``, else 0."""
    split: str = "train"
    """Task split drawn from when reset() gets no task: ``train``, ``test`` or ``hard``."""
    max_steps: int = 20
    """Steps per episode (PEARL's point robot: 20); the episode is truncated after them."""
    goal_radius: float = 0.2
    """Distance (in goal-circle radii) within which the step succeeds and the sparse
    reward is paid; in (0, 1]."""

    def __post_init__(self) -> None:
        if self.reward not in REWARDS:
            raise ConfigError(f"reward={self.reward!r} is unknown; allowed: {list(REWARDS)}")
        if self.split not in SPLITS:
            raise ConfigError(f"split={self.split!r} is unknown; allowed: {list(SPLITS)}")
        steps = self.max_steps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
            raise ConfigError(f"max_steps={steps!r} must be an integer in [1, 10000]")
        if not 1 <= steps <= 10_000:
            raise ConfigError(f"max_steps={steps} is outside [1, 10000]")
        self.max_steps = int(steps)
        r = self.goal_radius
        if isinstance(r, bool) or not isinstance(r, (int, float, np.integer, np.floating)):
            raise ConfigError(f"goal_radius={r!r} must be a number in (0, 1]")
        if not (math.isfinite(r) and 0.0 < r <= 1.0):
            raise ConfigError(f"goal_radius={r!r} is outside (0, 1]")
        self.goal_radius = float(r)


# --- dynamics and reward, shared by the single and the batched env ----------------------


def _advance(
    pos: np.ndarray, action: np.ndarray, goal: np.ndarray, cfg: PointNavConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step for any leading batch shape: ``(new_pos, reward, success)``.

    The single env calls it with shape (2,), the vector env with (N, 2): only
    elementwise IEEE operations, so both give bit-identical results.
    """
    a = np.minimum(np.maximum(action, np.float32(-1.0)), np.float32(1.0))
    new = pos + ACTION_SCALE * a.astype(np.float64)
    diff = new - goal
    dist = np.sqrt(diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1])
    inside = dist <= cfg.goal_radius
    # PEARL's sparse reward: 1 - d inside the radius (boundary included), else 0.
    reward = -dist if cfg.reward == "dense" else np.where(inside, 1.0 - dist, 0.0)
    return new, reward, inside


def _check_finite(a: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(a)):
        raise ValueError(
            f"{what} contains NaN or inf: {a.tolist()}; the policy is broken "
            "(check its inputs and weights)"
        )


# --- single env -------------------------------------------------------------------------


class PointNavEnv(gym.Env):
    """A point on the plane, a hidden goal on the unit half circle. See the module docstring.

    ``reset(seed=, options={"task": PointNavTask | dict})`` sets the task (without one, a
    task is drawn from the split). ``info``: ``success`` (within ``goal_radius`` after the
    step), ``reward_terms`` (one term, equal to the reward), ``task`` (goal x, y float32).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        reward: str = "dense",
        split: str = "train",
        max_steps: int = 20,
        goal_radius: float = 0.2,
        config: PointNavConfig | None = None,
    ) -> None:
        self.config = (
            config
            if config is not None
            else PointNavConfig(
                reward=reward, split=split, max_steps=max_steps, goal_radius=goal_radius
            )
        )
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (len(OBS_NAMES),), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (len(ACTION_NAMES),), np.float32)
        self.task: PointNavTask | None = None
        self._goal = np.zeros(2)
        self._task_vec = np.zeros(len(PRIVILEGED_NAMES), np.float32)
        self._pos = np.zeros(2)
        self._steps = 0
        self._term = REWARD_TERM[self.config.reward]

    def reset(
        self,
        *,
        seed: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = check_reset_options(options, ("task",))
        task = options.get("task")
        if task is None:
            task = sample_task(self.np_random, self.config.split)
        self.set_task(_parse_task(task, "options['task']"))
        self._pos = np.zeros(2)
        self._steps = 0
        return self._pos.astype(np.float32), self._info(False, 0.0)

    def set_task(self, task: PointNavTask) -> None:
        """Use ``task`` from now on (the position is unchanged until the next reset)."""
        self.task = task
        self._goal = task.goal
        self._task_vec = task.privileged_vector()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.task is None:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        if a.shape != (len(ACTION_NAMES),):
            raise ValueError(f"action must have 2 values (x, y velocity), got shape {a.shape}")
        _check_finite(a, "action")
        self._pos, reward, inside = _advance(self._pos, a, self._goal, self.config)
        self._steps += 1
        r = float(reward)
        truncated = self._steps >= self.config.max_steps
        return self._pos.astype(np.float32), r, False, truncated, self._info(bool(inside), r)

    def _info(self, success: bool, reward: float) -> dict[str, Any]:
        return {
            "success": success,
            "reward_terms": {self._term: reward},
            "task": self._task_vec.copy(),
        }


# --- batched env ------------------------------------------------------------------------


class VectorPointNavEnv(gym.vector.VectorEnv):
    """``num_envs`` point-navigation envs stepped as one numpy batch, one task per member.

    The public contract of :class:`~metagrasp.sim.vector.VectorGraspEnv` (reset seeding
    through :func:`~metagrasp.sim.vector.member_seed`, ``set_tasks`` persisting across
    same-step auto-resets, ``final_obs``/``final_info``), minus the grasp-only info keys
    ``grip_force`` and ``crushed``; ``task`` is (N, 2) and ``reward_terms`` has the
    variant's single key. No processes: a step is a few numpy operations on (N, 2)
    arrays. A NaN/inf action or a wrong shape raises ``ValueError`` before anything
    changes, so the env stays usable. Member ``i`` behaves exactly like a
    :class:`PointNavEnv` reset with the same seed and task.

    Args:
        num_envs: number of members N.
        reward: ``dense`` or ``sparse``; ignored if ``config``.
        split: split tasks are drawn from when a member has none set; ignored if ``config``.
        workers: accepted for the registry's common signature and ignored.
        seed: seed of the first :meth:`reset` if that gets none.
        config: full env configuration shared by every member.
    """

    metadata: dict[str, Any] = {"autoreset_mode": _SAME_STEP, "render_modes": []}
    obs_names = OBS_NAMES
    action_names = ACTION_NAMES

    def __init__(
        self,
        num_envs: int,
        reward: str = "dense",
        split: str = "train",
        workers: int | None = None,
        seed: int | None = None,
        config: PointNavConfig | None = None,
    ) -> None:
        self.closed = True  # until fully built, so close() is safe
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ConfigError(f"num_envs must be a positive integer, got {num_envs!r}")
        if workers is not None and (
            isinstance(workers, bool) or not isinstance(workers, int) or workers < 0
        ):
            raise ConfigError(f"workers must be an integer >= 0 or None, got {workers!r}")
        self.config = config if config is not None else PointNavConfig(reward=reward, split=split)
        self.num_envs = num_envs
        self.num_workers = 0  # everything runs in-process
        self.single_observation_space = gym.spaces.Box(
            -np.inf, np.inf, (len(OBS_NAMES),), np.float32
        )
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (len(ACTION_NAMES),), np.float32)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._first_seed = seed
        self._term = REWARD_TERM[self.config.reward]
        n = num_envs
        self._tasks: list[PointNavTask | None] = [None] * n
        self._current: list[PointNavTask | None] = [None] * n
        self._rngs: list[np.random.Generator | None] = [None] * n
        self._pos = np.zeros((n, 2))
        self._goal = np.zeros((n, 2))
        self._task_vec = np.zeros((n, len(PRIVILEGED_NAMES)), np.float32)
        self._steps = np.zeros(n, np.int64)
        self._ep_return = np.zeros(n)
        self._needs_reset = True
        self.closed = False

    # --- public API -------------------------------------------------------------------

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        tasks: Sequence[PointNavTask | dict | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every member; see the class docstring. ``options`` may hold ``tasks``."""
        seeds = begin_vector_reset(self, seed, tasks, options)
        for i, s in enumerate(seeds):
            self._reset_member(i, s)
        self._needs_reset = False
        infos = {
            "success": np.zeros(self.num_envs, np.bool_),
            "task": self._task_vec.copy(),
            "reward_terms": {self._term: np.zeros(self.num_envs)},
        }
        return self._pos.astype(np.float32), infos

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every member once, auto-resetting ended episodes; see the class docstring.

        Raises:
            ValueError: ``actions`` is not shaped ``(num_envs, 2)`` or holds NaN/inf.
        """
        self._check_open()
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        n, k = self.num_envs, len(ACTION_NAMES)
        a = np.asarray(actions, dtype=np.float32)
        if a.shape != (n, k):
            raise ValueError(
                f"actions must have shape ({n}, {k}) (num_envs, x/y velocity), got {a.shape}"
            )
        bad = ~np.isfinite(a).all(axis=1)
        if bad.any():
            raise ValueError(
                f"actions of member(s) {np.flatnonzero(bad).tolist()} contain NaN or inf; "
                "the policy is broken (check its inputs and weights)"
            )
        self._pos, reward, success = _advance(self._pos, a, self._goal, self.config)
        self._steps += 1
        self._ep_return += reward
        terminated = np.zeros(n, np.bool_)
        truncated = self._steps >= self.config.max_steps
        done = truncated.copy()
        mask = done[:, None]
        final_obs = np.where(mask, self._pos, 0.0).astype(np.float32)
        final_info = {
            "success": success & done,
            "task": np.where(mask, self._task_vec, np.float32(0.0)),
            "reward_terms": {self._term: np.where(done, reward, 0.0)},
            "episode_return": np.where(done, self._ep_return, 0.0),
            "episode_length": np.where(done, self._steps, 0),
        }
        # Same-step auto-reset with each member's fixed task (or a fresh draw from its own
        # generator); no seed, so the member's stream continues and runs reproduce.
        for i in np.flatnonzero(done):
            self._reset_member(int(i), None)
        infos = {
            # Members just reset report their new episode (not yet successful).
            "success": success & ~done,
            "task": self._task_vec.copy(),
            "reward_terms": {self._term: reward.copy()},  # always explain this step's reward
            "final_obs": final_obs,
            "_final_obs": done,
            "final_info": final_info,
            "_final_info": done.copy(),
        }
        return self._pos.astype(np.float32), reward.copy(), terminated, truncated, infos

    def set_tasks(self, tasks: Sequence[PointNavTask | dict | None]) -> None:
        """Fix one task per member (``None`` = draw from the split at each reset).

        Takes effect at each member's next reset and persists across auto-resets.

        Raises:
            TaskParamError: wrong count or a malformed task.
        """
        self._check_open()
        if isinstance(tasks, (PointNavTask, dict)) or len(tasks) != self.num_envs:
            raise TaskParamError(
                f"set_tasks needs a sequence of {self.num_envs} tasks (one per member, "
                "None = sample from the split)"
            )
        self._tasks = [
            None if t is None else _parse_task(t, f"task of member {i}")
            for i, t in enumerate(tasks)
        ]

    @property
    def tasks(self) -> list[PointNavTask | None]:
        """The tasks set with :meth:`set_tasks` (``None`` where members sample)."""
        return list(self._tasks)

    def current_tasks(self) -> list[PointNavTask]:
        """The task each member's current episode actually runs (set or sampled).

        Raises:
            RuntimeError: before the first :meth:`reset`.
        """
        self._check_open()
        if any(t is None for t in self._current):
            raise RuntimeError("call reset() before current_tasks()")
        return [t for t in self._current if t is not None]

    def close_extras(self, **kwargs: Any) -> None:
        """Nothing to release: no processes, no shared memory."""

    def __enter__(self) -> VectorPointNavEnv:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"VectorPointNavEnv({self.config.reward!r}, split={self.config.split!r}, "
            f"num_envs={self.num_envs})"
        )

    # --- internals --------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this VectorPointNavEnv is closed; create a new one")

    def _reset_member(self, i: int, seed: int | None) -> None:
        """What :meth:`PointNavEnv.reset` does, for member ``i``."""
        # gym.Env.reset's seeding: a seed makes a fresh generator; no seed keeps the
        # stream (or starts an unseeded one on first use).
        if seed is not None or self._rngs[i] is None:
            self._rngs[i], _ = gym.utils.seeding.np_random(seed)
        task = self._tasks[i]
        if task is None:
            rng = self._rngs[i]
            assert rng is not None
            task = sample_task(rng, self.config.split)
        self._current[i] = task
        self._goal[i] = task.goal
        self._task_vec[i] = task.privileged_vector()
        self._pos[i] = 0.0
        self._steps[i] = 0
        self._ep_return[i] = 0.0
