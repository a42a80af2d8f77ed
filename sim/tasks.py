"""Task parameters of the grasp family, their splits, and randomization as pure functions.

A *task* is one object with its hidden physical properties plus the robot-side dynamics
of one meta-training task. Randomization follows MuJoCo Playground's pattern:

* :func:`sample_task` ``(rng, split) -> TaskParams`` draws a task (pure, seeded);
* :func:`apply_task` ``(model, params, handles)`` writes it into a compiled model in
  place, without recompiling.

Splits: ``train`` is a distribution; ``test`` and ``hard`` are fixed lists of tasks built
from fixed seeds. They never overlap: every ``test`` task has a held-out shape or a mass
inside the held-out band that ``train`` never samples; every ``hard`` task has at least
one property outside the ``train`` ranges (heavier, more slippery or more fragile).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metagrasp.errors import ConfigError, TaskParamError, UnknownNameError
from metagrasp.sim.objects import (
    CRUSH_COLLAPSE,
    MAX_HALF_HEIGHT,
    MAX_HALF_WIDTH,
    MIN_HALF_HEIGHT,
    MIN_HALF_WIDTH,
    PRIMITIVES,
    ROLLING_FRICTION,
    SHAPES,
    TORSIONAL_FRICTION,
    half_extents,
    solid_inertia,
)

GRAVITY = 9.81
SPLITS: tuple[str, ...] = ("train", "val", "test", "hard")
"""``train``: the training distribution. ``val``: a fixed draw from it, to choose
settings (budgets, weights, checkpoints) without looking at the held-out splits.
``test``/``hard``: fixed held-out tasks for the meta-test protocol."""

TRAIN_SHAPES: tuple[str, ...] = (
    "box",
    "cylinder",
    "sphere",
    "capsule",
    "mesh_0",
    "mesh_1",
    "mesh_2",
    "mesh_3",
)
"""Shapes seen in meta-training."""
HELD_OUT_SHAPES: tuple[str, ...] = ("ellipsoid", "mesh_4", "mesh_5")
"""Shapes only the ``test``/``hard`` splits use."""

TRAIN_MASS = (0.03, 0.40)
"""Train object mass range (kg), minus :data:`HELD_OUT_MASS`."""
HELD_OUT_MASS = (0.17, 0.21)
"""Mass band (kg) that ``train`` never samples and ``test`` tasks with seen shapes use."""
TRAIN_FRICTION = (0.35, 1.2)
TRAIN_CRUSH = (1.4, 2.5)
"""Crush limit of fragile train objects (half of them), as a multiple of the grip force
lifting them needs (:meth:`TaskParams.required_grip_force`); the rest are robust. Relative,
not absolute: a fragile object barely survives the squeeze that lifts it (a paper cup of
water), so the safe grip of one object crushes another and slips on a third, and no
single grip serves them all."""
FRAGILE_MIN_CRUSH = 2.0
"""Smallest crush limit (N): a light object's window reaches at least this far (finer
than a tenth of the gripper's range is more than a servo's current control resolves)."""
ROBUST_CRUSH = 100.0
"""Crush limit (N) of an object that is not fragile: far above the gripper's 20 N."""
FRAGILE_FRACTION = 0.5
TRAIN_GAIN = (0.8, 1.2)
TRAIN_DAMPING = (0.7, 1.5)
TRAIN_ARMATURE = (0.7, 1.5)
TRAIN_NOISE = (0.0, 0.005)
LATENCY_STEPS = (0, 1, 2)

HARD_MASS = (0.40, 0.60)
HARD_FRICTION = (0.22, 0.35)
HARD_CRUSH = (1.3, 1.4)
"""Crush limit of the ``hard`` split's extra-fragile objects, as a multiple of the needed
grip force (the narrowest window :func:`is_feasible` allows)."""

GRIP_FORCE_MAX = 20.0
"""Gripper servo's largest squeeze (N), mirrored from the scene so this module needs no
MuJoCo import for sampling."""
LIFT_SAFETY = 1.6
"""Grip force needed to lift = safety x m g / (2 mu): covers lift acceleration and CoM
torque. Tasks whose needed force exceeds what the gripper or the object can take are
infeasible and are never sampled."""

NUM_VAL_TASKS = 48
NUM_TEST_TASKS = 48
NUM_HARD_TASKS = 48
VAL_SEED = 7
"""The ``val`` draw (the objects ``benchmarks/scripted_grip.py --split train`` used
before the split existed: the same seed and order)."""
TEST_SEED = 10_001
HARD_SEED = 20_002

# Physically valid ranges, checked on every TaskParams (wider than any split).
VALID_RANGES: dict[str, tuple[float, float]] = {
    "mass": (0.005, 2.0),
    "friction": (0.05, 2.0),
    "crush_limit": (0.5, 1000.0),
    "actuator_gain": (0.3, 3.0),
    "damping": (0.1, 5.0),
    "armature": (0.1, 5.0),
    "obs_noise": (0.0, 0.05),
}


@dataclass(frozen=True)
class TaskParams:
    """One task: the object and its hidden properties, plus robot-side dynamics.

    Instances are validated at construction; use :meth:`from_dict` for untrusted input.
    """

    shape: str = "box"
    """Object shape, one of :data:`metagrasp.sim.objects.SHAPES`."""
    size: tuple[float, float, float] = (0.02, 0.02, 0.02)
    """MuJoCo geom size of the shape (m); ignored for meshes (their size is fixed)."""
    mass: float = 0.1
    """Object mass (kg). Hidden."""
    friction: float = 0.8
    """Sliding friction coefficient of the object's surface. Hidden."""
    com_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Centre of mass offset from the geometric centre, object frame (m). Hidden."""
    crush_limit: float = ROBUST_CRUSH
    """Pad force (N) above which the object breaks and the episode fails. Hidden."""
    actuator_gain: float = 1.0
    """Scale on every servo's position gain (kp and kv)."""
    damping: float = 1.0
    """Scale on joint damping."""
    armature: float = 1.0
    """Scale on joint armature (reflected rotor inertia)."""
    latency: int = 0
    """Action latency in control steps (0-2): a command takes effect this many steps late."""
    obs_noise: float = 0.0
    """Std of observation noise on positions (rad or m); velocities get 5x, pose 0.5x."""
    task_id: str = ""
    """Free-form label, e.g. ``test-007`` for fixed split tasks."""

    def __post_init__(self) -> None:
        validate_task(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskParams:
        """Build from a (possibly user-written) dict, naming any bad field.

        Raises:
            TaskParamError: unknown fields, wrong types or values out of range.
        """
        if not isinstance(data, dict):
            raise TaskParamError(f"task must be a dict of fields, got {type(data).__name__}")
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise TaskParamError(
                f"unknown task field(s) {unknown}; allowed fields: {sorted(names)}"
            )
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            default = names[key].default
            try:
                if isinstance(default, tuple):
                    seq = tuple(float(v) for v in value)
                    if len(seq) != 3:
                        raise ValueError("needs 3 numbers")
                    kwargs[key] = seq
                elif isinstance(default, bool) or default is None:
                    kwargs[key] = value
                elif isinstance(default, int):
                    if isinstance(value, bool) or float(value) != int(value):
                        raise ValueError("needs an integer")
                    kwargs[key] = int(value)
                elif isinstance(default, float):
                    if isinstance(value, bool):
                        raise ValueError("needs a number")
                    kwargs[key] = float(value)
                else:
                    if not isinstance(value, str):
                        raise ValueError("needs a string")
                    kwargs[key] = value
            except (TypeError, ValueError) as exc:
                raise TaskParamError(
                    f"task field {key!r}={value!r} is malformed: {exc} (expected like {default!r})"
                ) from None
        return cls(**kwargs)

    def replace(self, **changes: Any) -> TaskParams:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @property
    def fragile(self) -> bool:
        """Whether the gripper can crush the object."""
        return self.crush_limit < GRIP_FORCE_MAX

    def required_grip_force(self) -> float:
        """Pad force (N) needed to lift the object without slipping (with safety margin)."""
        return required_grip_force(self.mass, self.friction)

    def privileged_vector(self) -> np.ndarray:
        """The hidden parameters, roughly normalised to [-1, 1], for oracles and analysis.

        Order: mass, friction, com x/y/z, log crush limit, gain, damping, armature,
        latency, obs noise (11 values; see :data:`PRIVILEGED_NAMES`).
        """
        return np.array(
            [
                (self.mass - 0.25) / 0.25,
                (self.friction - 0.8) / 0.6,
                *(np.asarray(self.com_offset) / 0.01),
                (math.log(self.crush_limit) - math.log(12.0)) / 1.5,
                (self.actuator_gain - 1.0) / 0.3,
                (self.damping - 1.0) / 0.5,
                (self.armature - 1.0) / 0.5,
                self.latency - 1.0,
                self.obs_noise / 0.005,
            ],
            dtype=np.float32,
        )


def required_grip_force(mass, friction):
    """Pad force (N) that lifts ``mass`` (kg) at ``friction`` without slipping, with the
    safety margin (scalars or arrays)."""
    return LIFT_SAFETY * mass * GRAVITY / (2.0 * friction)


def grip_window(task_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(force that lifts the object, crush limit, actuator gain) of rows of
    :meth:`TaskParams.privileged_vector` (the inverse of its scaling for those entries),
    for learners that see only the vector an env reports."""
    v = np.asarray(task_vectors, np.float64)
    mass, friction = v[..., 0] * 0.25 + 0.25, v[..., 1] * 0.6 + 0.8
    crush = np.exp(v[..., 5] * 1.5 + math.log(12.0))
    return required_grip_force(mass, friction), crush, v[..., 6] * 0.3 + 1.0


PRIVILEGED_NAMES: tuple[str, ...] = (
    "mass",
    "friction",
    "com_x",
    "com_y",
    "com_z",
    "log_crush_limit",
    "actuator_gain",
    "damping",
    "armature",
    "latency",
    "obs_noise",
)


def _check_range(name: str, value: float, lo: float, hi: float, unit: str = "") -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
        raise TaskParamError(
            f"task field {name!r}={value!r} is outside the physically valid range "
            f"[{lo}, {hi}]{unit}"
        )


def validate_task(p: TaskParams) -> None:
    """Check every field against its physically valid range.

    Raises:
        TaskParamError: naming the field and the allowed range.
    """
    if p.shape not in SHAPES:
        raise TaskParamError(f"task field 'shape'={p.shape!r} is unknown; allowed: {list(SHAPES)}")
    if len(p.size) != 3:
        raise TaskParamError("task field 'size' needs 3 numbers (MuJoCo geom size)")
    for v in p.size:
        _check_range("size", v, 0.0, 0.1, " m")
    if p.shape in PRIMITIVES:
        ext = half_extents(p.shape, p.size)
        # The narrow horizontal dimension must fit between the fingers.
        _check_range(
            "size (half-width between the fingers)",
            float(min(ext[0], ext[1])),
            MIN_HALF_WIDTH,
            MAX_HALF_WIDTH,
            " m",
        )
        _check_range("size (half-height)", float(ext[2]), MIN_HALF_HEIGHT, MAX_HALF_HEIGHT, " m")
    for name, (lo, hi) in VALID_RANGES.items():
        unit = {"mass": " kg", "crush_limit": " N"}.get(name, "")
        _check_range(name, getattr(p, name), lo, hi, unit)
    if len(p.com_offset) != 3:
        raise TaskParamError("task field 'com_offset' needs 3 numbers (m)")
    ext = half_extents(p.shape, p.size)
    for axis, (v, e) in enumerate(zip(p.com_offset, ext, strict=True)):
        _check_range(
            f"com_offset[{axis}]",
            v,
            -0.5 * float(e),
            0.5 * float(e),
            " m (half the object's extent)",
        )
    if p.latency not in LATENCY_STEPS or isinstance(p.latency, bool):
        raise TaskParamError(
            f"task field 'latency'={p.latency!r} must be one of {list(LATENCY_STEPS)} control steps"
        )


def is_feasible(p: TaskParams) -> bool:
    """Whether some grip force lifts the object without slipping and without crushing it."""
    need = p.required_grip_force()
    return need <= 0.8 * GRIP_FORCE_MAX and need * 1.3 <= p.crush_limit


# --- sampling ---------------------------------------------------------------------------


def _sample_size(rng: np.random.Generator, shape: str) -> tuple[float, float, float]:
    w = lambda: float(rng.uniform(MIN_HALF_WIDTH + 0.003, MAX_HALF_WIDTH - 0.004))  # noqa: E731
    h = lambda: float(rng.uniform(MIN_HALF_HEIGHT + 0.006, MAX_HALF_HEIGHT - 0.01))  # noqa: E731
    if shape in ("box", "ellipsoid"):
        return (w(), w(), h())
    if shape == "cylinder":
        return (w(), h(), 0.0)
    if shape == "sphere":
        r = float(rng.uniform(0.016, 0.028))
        return (r, 0.0, 0.0)
    if shape == "capsule":
        return (float(rng.uniform(0.014, 0.024)), float(rng.uniform(0.01, 0.03)), 0.0)
    return (0.0, 0.0, 0.0)  # meshes: fixed size


def _draw(
    rng: np.random.Generator,
    split: str,
    shapes: tuple[str, ...],
    mass_range: tuple[float, float],
    exclude_band: bool,
    hard: bool = False,
) -> TaskParams:
    """Draw one feasible task (rejection sampling over infeasible combinations)."""
    for _ in range(1000):
        shape = shapes[int(rng.integers(len(shapes)))]
        size = _sample_size(rng, shape)
        mass = float(rng.uniform(*mass_range))
        if exclude_band and HELD_OUT_MASS[0] <= mass <= HELD_OUT_MASS[1]:
            continue
        friction = float(rng.uniform(*TRAIN_FRICTION))
        crush_ratio = float(rng.uniform(*TRAIN_CRUSH)) if rng.random() < FRAGILE_FRACTION else 0.0
        if hard:
            # At least one property outside the train ranges; sometimes two.
            extremes = rng.permutation(3)[: 1 + int(rng.random() < 0.3)]
            for e in extremes:
                if e == 0:
                    mass = float(rng.uniform(*HARD_MASS))
                elif e == 1:
                    friction = float(rng.uniform(*HARD_FRICTION))
                else:
                    crush_ratio = float(rng.uniform(*HARD_CRUSH))
        need = required_grip_force(mass, friction)
        crush = max(need * crush_ratio, FRAGILE_MIN_CRUSH) if crush_ratio else ROBUST_CRUSH
        if hard and crush_ratio and crush > need * HARD_CRUSH[1]:
            continue  # floored: not extra-fragile after all
        ext = half_extents(shape, size)
        com = tuple(float(v) for v in rng.uniform(-0.3, 0.3, size=3) * ext)
        params = TaskParams(
            shape=shape,
            size=size,
            mass=mass,
            friction=friction,
            com_offset=com,
            crush_limit=crush,
            actuator_gain=float(rng.uniform(*TRAIN_GAIN)),
            damping=float(rng.uniform(*TRAIN_DAMPING)),
            armature=float(rng.uniform(*TRAIN_ARMATURE)),
            latency=int(rng.integers(0, 3)),
            obs_noise=float(rng.uniform(*TRAIN_NOISE)),
        )
        if is_feasible(params):
            return params
    raise RuntimeError(f"could not draw a feasible {split} task in 1000 tries")


@functools.cache
def split_tasks(split: str) -> tuple[TaskParams, ...]:
    """The fixed tasks of ``val``, ``test`` or ``hard`` (from fixed seeds, deterministic).

    ``val`` is drawn from the training distribution, so it measures how well a run
    learned what it was trained on, never how it generalises.

    Raises:
        UnknownNameError: for ``train`` (a distribution, not a list) or an unknown split.
    """
    check_split(split)
    if split == "train":
        raise UnknownNameError(
            "split 'train' is a distribution: use sample_task(rng, 'train'), or the "
            "fixed draw from it, split 'val'; fixed task lists exist for 'val', 'test' "
            "and 'hard'"
        )
    tasks = []
    if split == "val":
        rng = np.random.default_rng(VAL_SEED)
        for i in range(NUM_VAL_TASKS):
            t = _draw(rng, "train", TRAIN_SHAPES, TRAIN_MASS, exclude_band=True)
            tasks.append(t.replace(task_id=f"val-{i:03d}"))
    elif split == "test":
        rng = np.random.default_rng(TEST_SEED)
        for i in range(NUM_TEST_TASKS):
            if i % 2 == 0:  # held-out shape, train-range mass
                t = _draw(rng, split, HELD_OUT_SHAPES, TRAIN_MASS, exclude_band=False)
            else:  # seen shape, held-out mass band
                t = _draw(rng, split, TRAIN_SHAPES, HELD_OUT_MASS, exclude_band=False)
            tasks.append(t.replace(task_id=f"test-{i:03d}"))
    else:
        rng = np.random.default_rng(HARD_SEED)
        for i in range(NUM_HARD_TASKS):
            t = _draw(rng, split, SHAPES, TRAIN_MASS, exclude_band=False, hard=True)
            tasks.append(t.replace(task_id=f"hard-{i:03d}"))
    return tuple(tasks)


def check_split(split: str) -> str:
    """Return ``split`` if it is a known split name, else raise UnknownNameError."""
    if split not in SPLITS:
        raise UnknownNameError(f"unknown split {split!r}; allowed: {list(SPLITS)}")
    return split


def check_reset_options(options: dict[str, Any] | None, allowed: tuple[str, ...]) -> dict:
    """A copy of an env's ``reset(options=...)``; raises ConfigError on unknown keys."""
    options = dict(options or {})
    unknown = set(options) - set(allowed)
    if unknown:
        raise ConfigError(
            f"unknown reset option(s) {sorted(unknown)}; allowed: "
            + ", ".join(repr(a) for a in allowed)
        )
    return options


def sample_task(rng: np.random.Generator, split: str = "train") -> TaskParams:
    """Draw a task of ``split`` (pure: the result depends only on ``rng``'s state).

    ``train`` draws from the training distribution; ``val``/``test``/``hard`` pick one
    of the split's fixed tasks uniformly.
    """
    check_split(split)
    if split == "train":
        return _draw(rng, split, TRAIN_SHAPES, TRAIN_MASS, exclude_band=True)
    tasks = split_tasks(split)
    return tasks[int(rng.integers(len(tasks)))]


def in_train_support(p: TaskParams) -> bool:
    """Whether ``train`` sampling could produce this task (used to prove non-overlap)."""
    return (
        p.shape in TRAIN_SHAPES
        and TRAIN_MASS[0] <= p.mass <= TRAIN_MASS[1]
        and not HELD_OUT_MASS[0] <= p.mass <= HELD_OUT_MASS[1]
        and TRAIN_FRICTION[0] <= p.friction <= TRAIN_FRICTION[1]
        and (
            p.crush_limit == ROBUST_CRUSH
            or p.crush_limit == FRAGILE_MIN_CRUSH
            or TRAIN_CRUSH[0] <= p.crush_limit / p.required_grip_force() <= TRAIN_CRUSH[1]
        )
    )


# --- applying a task to a compiled model -------------------------------------------------


@dataclass
class NominalDynamics:
    """The model's un-randomized dynamics, captured once so scales never compound."""

    gainprm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    biasprm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    damping: np.ndarray = field(default_factory=lambda: np.zeros(0))
    armature: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def capture(cls, model: Any) -> NominalDynamics:
        return cls(
            model.actuator_gainprm.copy(),
            model.actuator_biasprm.copy(),
            model.dof_damping.copy(),
            model.dof_armature.copy(),
        )


def apply_task(
    model: Any,
    params: TaskParams,
    handles: Any,
    nominal: NominalDynamics,
) -> None:
    """Write ``params`` into a compiled scene model in place (no recompile).

    Activates the task's object geom (the other candidates stop colliding and vanish),
    sizes it, sets the object's mass, inertia, centre of mass and friction, and scales
    servo gains, damping and armature from their nominal values. Latency and observation
    noise live in the env, not the model. Call ``mujoco.mj_setConst`` afterwards (the env
    does) so the solver's mass-dependent constants follow the new object.
    """
    for shape, gid in handles.object_geoms.items():
        _enable_geom(model, gid, shape == params.shape)
    for stages in handles.crushed_geoms.values():
        for gid in stages:
            _enable_geom(model, gid, False)
    gid = handles.object_geoms[params.shape]
    if params.shape in PRIMITIVES:
        model.geom_size[gid] = params.size
        ext = half_extents(params.shape, params.size)
        # Keep the broad phase honest after resizing: bounding sphere and box.
        model.geom_rbound[gid] = float(np.linalg.norm(ext))
        model.geom_aabb[gid] = np.concatenate([np.zeros(3), ext])
    model.geom_friction[gid] = (params.friction, TORSIONAL_FRICTION, ROLLING_FRICTION)
    model.geom_rgba[gid, :3] = _colour(params)
    b = handles.object_body
    model.body_mass[b] = params.mass
    model.body_inertia[b] = solid_inertia(params.shape, params.size, params.mass)
    model.body_ipos[b] = params.com_offset
    model.body_iquat[b] = (1.0, 0.0, 0.0, 0.0)
    g = params.actuator_gain
    model.actuator_gainprm[:, 0] = nominal.gainprm[:, 0] * g
    model.actuator_biasprm[:, 1:3] = nominal.biasprm[:, 1:3] * g
    model.dof_damping[handles.arm_dofs_all] = nominal.damping[handles.arm_dofs_all] * params.damping
    model.dof_armature[handles.arm_dofs_all] = (
        nominal.armature[handles.arm_dofs_all] * params.armature
    )


def _enable_geom(model: Any, gid: int, on: bool) -> None:
    """Make a candidate object geom collide and show (``on``) or vanish."""
    model.geom_contype[gid] = 1 if on else 0
    model.geom_conaffinity[gid] = 2 | 4 if on else 0
    model.geom_rgba[gid, 3] = 1.0 if on else 0.0


def collapse_object(model: Any, params: TaskParams, handles: Any, progress: float) -> int:
    """Crush the active object in place: shrink it ``progress`` (0 .. 1) of the way to
    ``CRUSH_COLLAPSE`` of its size, about its centre.

    The env calls this every physics step of the collapse (``CRUSH_COLLAPSE_SECONDS``, from
    ``CRUSH_COLLAPSE_DELAY`` after the grip exceeded the crush limit); the next
    :func:`apply_task` restores the intact object. Mass, inertia and friction stay: the
    object gave way, it did not vanish. A primitive shrinks its own geom; a mesh swaps to its
    nearest collapsed copy (compiled meshes cannot be rescaled).

    Returns:
        The id of the object's collision geom from now on.
    """
    progress = min(max(float(progress), 0.0), 1.0)
    gid = handles.object_geoms[params.shape]
    if params.shape in PRIMITIVES:
        model.geom_size[gid] = np.asarray(params.size) * (1.0 - (1.0 - CRUSH_COLLAPSE) * progress)
        return gid
    stages = handles.crushed_geoms[params.shape]
    stage = int(round(progress * len(stages)))
    new = stages[stage - 1] if stage else gid
    model.geom_friction[new] = model.geom_friction[gid]
    model.geom_rgba[new, :3] = model.geom_rgba[gid, :3]
    for g in (gid, *stages):
        _enable_geom(model, g, g == new)
    return new


def _colour(p: TaskParams) -> tuple[float, float, float]:
    """Colour by shape only: hidden properties must not leak into rendered pixels."""
    i = SHAPES.index(p.shape)
    palette = [
        (0.85, 0.3, 0.3),
        (0.3, 0.6, 0.9),
        (0.4, 0.8, 0.4),
        (0.9, 0.75, 0.3),
        (0.7, 0.45, 0.85),
        (0.5, 0.75, 0.8),
    ]
    return palette[i % len(palette)]
