"""MuJoCo grasp task family (training side: mujoco, dm_control, gymnasium).

Importing this package registers the Gymnasium environments (``metagrasp/...``).
"""

import os as _os

# Headless machines (CI, robot-side trainers) have no display: render offscreen with
# OSMesa unless the user chose a backend. Must happen before mujoco/dm_control load GL.
if "MUJOCO_GL" not in _os.environ and not _os.environ.get("DISPLAY"):
    _os.environ["MUJOCO_GL"] = "osmesa"
    _os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

from metagrasp.sim.registry import (  # noqa: E402
    FAMILIES,
    get_family,
    make_env,
    make_vector_env,
    register_family,
)
from metagrasp.sim.tasks import TaskParams, apply_task, sample_task, split_tasks  # noqa: E402
from metagrasp.sim.vector import VectorEnvError, VectorGraspEnv  # noqa: E402

__all__ = [
    "FAMILIES",
    "TaskParams",
    "VectorEnvError",
    "VectorGraspEnv",
    "apply_task",
    "get_family",
    "make_env",
    "make_vector_env",
    "register_family",
    "sample_task",
    "split_tasks",
]
