"""An exported ONNX bundle drives the virtual robot through `deploy`, and the recorded
episodes are what the bundle's device-side `adapt` takes (the calibration issue's path)."""

import sys

import numpy as np
import pytest

from metagrasp.adapt.runtime import load_bundle
from metagrasp.errors import ConfigError
from metagrasp.hardware.control_loop import LoopConfig
from metagrasp.hardware.deploy import deploy
from metagrasp.hardware.emulator import FaultSpec
from metagrasp.hardware.policies import BundlePolicy, load_policy
from metagrasp.hardware.recorder import load_recording
from metagrasp.hardware.robot_config import virtual_arm_config
from metagrasp.sim.virtual_robot import VirtualRobot
from tests.bundles import cavia_bundle

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="needs os.openpty"),
    pytest.mark.usefixtures("one_torch_thread"),
]


def test_an_onnx_bundle_deploys_and_its_episodes_feed_adapt(tmp_path):
    path = cavia_bundle(tmp_path / "policy.onnx")
    policy = load_policy(str(path))
    assert isinstance(policy, BundlePolicy)
    assert (policy.spec.task, policy.spec.action_mode, policy.spec.control_hz) == (
        "grasp-lift",
        "ee",
        25.0,
    )
    vr = VirtualRobot(virtual_arm_config("dynamixel"), faults=FaultSpec()).start()
    try:
        s = deploy(
            policy,
            vr.robot,
            vr.path,
            pose_source=vr.pose_address,
            episodes=2,
            loop=LoopConfig(rate_hz=25.0, episode_steps=8, park_s=0.2, settle_s=0.1),
            record_dir=str(tmp_path / "rec"),
            log=lambda s: None,
        )
    finally:
        vr.stop()
    assert s.error is None and s.torque_off_failures == []
    episodes = load_recording(tmp_path / "rec")["episodes"]
    assert [e["status"] for e in episodes] == ["ok", "ok"]
    # Recorded episodes in the runtime's adaptation format (rewards come from the
    # calibration layer; zeros here only exercise the plumbing).
    batch = [
        {
            "obs": e["data"]["obs"],
            "actions": e["data"]["action"],
            "rewards": np.zeros(len(e["data"]["obs"]), np.float32),
            "next_obs": e["data"]["next_obs"],
            "dones": np.zeros(len(e["data"]["obs"]), np.float32),
        }
        for e in episodes
    ]
    bundle = load_bundle(path)
    state = bundle.adapt(bundle.init_state(), batch)
    assert np.all(np.isfinite(state["context"]))
    policy.set_task_state(state)
    policy.reset()
    assert policy.act(batch[0]["obs"][0]).shape == (6,)


def test_a_point_nav_bundle_is_refused(tmp_path):
    class Fake:
        metadata = {"obs_names": ["x", "y"], "env": {"family": "point-nav"}}

    with pytest.raises(ConfigError, match="observation layout"):
        BundlePolicy(Fake())
    Fake.metadata = {"env": {"family": "point-nav"}}
    with pytest.raises(ConfigError, match="not an arm task"):
        BundlePolicy(Fake())
