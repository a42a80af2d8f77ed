"""The task family demands adaptation: hidden properties change the best grip.

A fixed scripted controller (the same for every task) grips at a chosen force. A fragile
object only survives a gentle grip and a heavy, slippery one only lifts with a firm grip,
so no single non-adaptive grip solves both: exactly the gap meta-RL must close.
"""

import pytest

from metagrasp.sim.grasp_env import GraspEnv
from metagrasp.sim.scripted import ScriptedGrasp, run_episode
from metagrasp.sim.tasks import TaskParams

BOX = TaskParams(shape="box", size=(0.018, 0.03, 0.025), mass=0.1, friction=0.8)
POSE = {"object_pose": (0.2, 0.0, 0.0)}


def _outcome(task, grip_force):
    env = GraspEnv()
    res = run_episode(
        env, ScriptedGrasp(task, grip_force=grip_force), seed=0, options={"task": task, **POSE}
    )
    return res


def test_light_object_lifts_at_any_grip():
    for g in (3.0, 16.0):
        assert _outcome(BOX, g)["success"]


def test_fragile_object_needs_a_gentle_grip():
    fragile = BOX.replace(crush_limit=5.0)
    assert _outcome(fragile, 3.0)["success"]
    res = _outcome(fragile, 8.0)
    assert res["crushed"] and not res["success"]


def test_heavy_slippery_object_needs_a_firm_grip():
    heavy = BOX.replace(mass=0.35, friction=0.4)
    assert not _outcome(heavy, 3.0)["success"]
    assert _outcome(heavy, 8.0)["success"]


@pytest.mark.parametrize("grip", [3.0, 8.0, 16.0])
def test_no_single_grip_solves_both(grip):
    fragile = BOX.replace(crush_limit=5.0)
    heavy = BOX.replace(mass=0.35, friction=0.4)
    assert not (_outcome(fragile, grip)["success"] and _outcome(heavy, grip)["success"])
