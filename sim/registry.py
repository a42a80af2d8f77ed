"""Registry of task families: short names, Gymnasium ids, splits.

Every family is registered with Gymnasium when :mod:`metagrasp.sim` is imported, so both
``metagrasp.sim.make_env("grasp-lift", split="test")`` and
``gym.make("metagrasp/GraspLift-v0", split="test")`` work.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from metagrasp.errors import UnknownNameError
from metagrasp.sim.tasks import SPLITS, check_split


@dataclass(frozen=True)
class TaskFamily:
    """A registered family of tasks."""

    name: str
    """Short name used on the command line (``--task``)."""
    env_id: str
    """Gymnasium id."""
    entry_point: str
    """``module:Class`` of the environment."""
    kwargs: dict[str, Any]
    """Constructor keyword arguments fixed by the family."""
    description: str
    """One line for ``metagrasp envs``."""
    splits: tuple[str, ...] = SPLITS
    """Named task splits the family supports."""
    vector_entry_point: str = ""
    """``module:Class`` of the batched training env (the contract of
    :class:`~metagrasp.sim.vector.VectorGraspEnv`: ``num_envs``, ``split``, ``workers``,
    ``seed`` keyword arguments; ``set_tasks``; same-step auto-reset)."""
    tasks_module: str = "metagrasp.sim.tasks"
    """Module with the family's ``sample_task(rng, split)`` and ``split_tasks(split)``."""


FAMILIES: dict[str, TaskFamily] = {}


def register_family(family: TaskFamily) -> None:
    """Add a family to the registry and to Gymnasium (idempotent)."""
    FAMILIES[family.name] = family
    if family.env_id not in gym.registry:
        gym.register(
            id=family.env_id,
            entry_point=family.entry_point,
            kwargs=family.kwargs,
            disable_env_checker=True,
        )


def get_family(name: str) -> TaskFamily:
    """Look a family up by short name or Gymnasium id.

    Raises:
        UnknownNameError: listing the registered names.
    """
    for fam in FAMILIES.values():
        if name in (fam.name, fam.env_id):
            return fam
    raise UnknownNameError(
        f"unknown task family {name!r}; registered: {sorted(FAMILIES)} (see `metagrasp envs`)"
    )


def make_env(name: str, split: str = "train", **kwargs: Any) -> gym.Env:
    """Create an environment of a registered family on a split."""
    fam = get_family(name)
    check_split(split)
    if split not in fam.splits:
        raise UnknownNameError(
            f"family {fam.name!r} has no split {split!r}; it has {list(fam.splits)}"
        )
    return gym.make(fam.env_id, split=split, **kwargs)


def make_vector_env(
    name: str,
    num_envs: int,
    split: str = "train",
    seed: int | None = None,
    workers: int | None = None,
) -> Any:
    """Create the batched training env of a registered family (one task per member).

    Raises:
        UnknownNameError: unknown family or split, or a family without a batched env.
    """
    fam = get_family(name)
    check_split(split)
    if split not in fam.splits:
        raise UnknownNameError(
            f"family {fam.name!r} has no split {split!r}; it has {list(fam.splits)}"
        )
    if not fam.vector_entry_point:
        raise UnknownNameError(f"family {fam.name!r} has no batched env for training")
    module, cls = fam.vector_entry_point.split(":")
    factory = getattr(importlib.import_module(module), cls)
    return factory(num_envs=num_envs, split=split, seed=seed, workers=workers, **fam.kwargs)


def family_sample_task(name: str, rng: Any, split: str = "train") -> Any:
    """Draw one task of a family's split (what meta-training feeds each env member)."""
    fam = get_family(name)
    return importlib.import_module(fam.tasks_module).sample_task(rng, split)


def family_split_tasks(name: str, split: str) -> tuple[Any, ...]:
    """The fixed held-out tasks of a family's split (``test``, ``hard``)."""
    fam = get_family(name)
    return tuple(importlib.import_module(fam.tasks_module).split_tasks(split))


_GRASP = "metagrasp.sim.grasp_env:GraspEnv"
_GRASP_VECTOR = "metagrasp.sim.vector:VectorGraspEnv"
for _name, _id, _desc in (
    ("reach", "metagrasp/Reach-v0", "move the gripper's centre onto the object (2 cm)"),
    (
        "grasp-lift",
        "metagrasp/GraspLift-v0",
        "grasp the object, lift it 5 cm and hold it to the end without crushing it",
    ),
    ("place", "metagrasp/Place-v0", "carry the object to a target on the table (3 cm)"),
):
    register_family(
        TaskFamily(_name, _id, _GRASP, {"task": _name}, _desc, vector_entry_point=_GRASP_VECTOR)
    )

# 2D point-robot navigation (PEARL's point robot): the cheap check of meta-RL algorithms.
_POINT = "metagrasp.sim.point_nav:PointNavEnv"
_POINT_VECTOR = "metagrasp.sim.point_nav:VectorPointNavEnv"
for _name, _id, _reward, _desc in (
    (
        "point-nav",
        "metagrasp/PointNav-v0",
        "dense",
        "2D point robot to a hidden goal on the unit half circle; reward -distance, 20 steps",
    ),
    (
        "point-nav-sparse",
        "metagrasp/PointNavSparse-v0",
        "sparse",
        "2D point robot, PEARL's sparse reward: 1 - distance within 0.2 of the goal, else 0",
    ),
):
    register_family(
        TaskFamily(
            _name,
            _id,
            _POINT,
            {"reward": _reward},
            _desc,
            vector_entry_point=_POINT_VECTOR,
            tasks_module="metagrasp.sim.point_nav",
        )
    )
