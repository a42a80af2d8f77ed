"""Deploy against the virtual robot through a real pseudo-terminal: lifecycle, recording,
and fault injection. Every fault test ends with torque off (or the servo-side watchdog
holding the arm when the port is gone) and the recorded episodes intact and readable."""

import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

from metagrasp.hardware.control_loop import LoopConfig
from metagrasp.hardware.deploy import RobotSession, calibrate_joints, deploy
from metagrasp.hardware.emulator import FaultSpec
from metagrasp.hardware.errors import ActivationRefusedError
from metagrasp.hardware.policies import PolicySpec, SweepPolicy
from metagrasp.hardware.recorder import load_recording
from metagrasp.hardware.robot import Robot
from metagrasp.hardware.robot_config import load_robot_file, save_robot_file, virtual_arm_config
from metagrasp.kinematics import ARM
from metagrasp.sim.tasks import TaskParams
from metagrasp.sim.virtual_robot import VirtualRobot

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs os.openpty")

RATE = 50.0
FRAGILE_BOX = TaskParams(shape="box", size=(0.018, 0.03, 0.025), mass=0.1, crush_limit=5.0)
"""A box that an 8 N squeeze crushes and a 2 N one lifts intact."""


@pytest.fixture
def virtual_robot():
    made = []

    def factory(protocol="dynamixel", faults="", **kw):
        vr = VirtualRobot(virtual_arm_config(protocol), faults=FaultSpec.parse(faults), **kw)
        made.append(vr.start())
        return vr

    yield factory
    for vr in made:
        vr.stop()


def _loop(steps=10):
    # Watchdog at 0.3 s, not the 0.1 s default: these tests check the protocol and the
    # session, and a shared 2-core CI machine stalls a process for over 100 ms now and
    # then (it tripped once in CI, 2026-12-01). The stall test below sleeps 0.4 s, still
    # past it; the default is checked in test_the_loop_watchdog_defaults_to_five_periods.
    return LoopConfig(rate_hz=RATE, episode_steps=steps, park_s=0.2, settle_s=0.1, watchdog_s=0.3)


def _deploy(vr, tmp_path, policy=None, episodes=1, steps=10, robot=None, **kw):
    return deploy(
        policy or SweepPolicy(PolicySpec(control_hz=RATE)),
        robot or vr.robot,
        vr.path,
        pose_source=vr.pose_address,
        episodes=episodes,
        loop=_loop(steps),
        record_dir=str(tmp_path / "rec"),
        log=lambda s: None,
        **kw,
    )


def _torque(vr):
    return [vr.chain.get(i, "torque_enable") for i in vr.robot.ids]


@pytest.mark.parametrize("protocol", ["dynamixel", "feetech"])
def test_protocol_round_trips_against_the_virtual_robot(virtual_robot, protocol):
    vr = virtual_robot(protocol)
    robot = Robot.open(vr.robot, vr.path)
    try:
        robot.connect()  # pings and model numbers (XM430-W350: 1020, STS3215: 777)
        robot.configure()
        reading = robot.read()
        np.testing.assert_allclose(reading.q, ARM.home, atol=0.01)
        assert robot.check_activation() == []
        robot.activate()
        target = reading.q + np.array([0.2, 0.1, 0, 0, 0.3, 0])
        for _ in range(40):
            robot.write(target, 1.0)
            time.sleep(0.01)
        np.testing.assert_allclose(robot.read().q[[0, 4]], target[[0, 4]], atol=0.05)
        assert robot.deactivate() == []
        assert _torque(vr) == [0] * 6
    finally:
        robot.disconnect()


@pytest.mark.parametrize("protocol", ["dynamixel", "feetech"])
def test_deploy_runs_and_records_episodes(virtual_robot, tmp_path, protocol):
    vr = virtual_robot(protocol)
    s = _deploy(vr, tmp_path, episodes=2)
    assert s.error is None and s.torque_off_failures == []
    assert [e["status"] for e in s.episodes] == ["ok", "ok"]
    assert _torque(vr) == [0] * 6
    assert vr.episodes_started == 2  # the pose stream's episode markers re-placed the object
    rec = load_recording(tmp_path / "rec")
    data = rec["episodes"][1]["data"]
    assert data["obs"].shape == (10, 33) and np.all(np.isfinite(data["obs"]))
    np.testing.assert_array_equal(data["next_obs"][:-1], data["obs"][1:])
    assert np.any(data["next_obs"][-1] != 0)
    # The object pose in the observation is the simulated object's.
    np.testing.assert_allclose(data["obs"][-1, 23:26], vr.object_pose()[0], atol=0.01)
    assert rec["sessions"][0]["robot"]["protocol"] == protocol
    assert s.timing["cycles"] == 20


def test_a_session_runs_episodes_one_at_a_time(virtual_robot, tmp_path):
    """The API calibration builds on: episodes on demand, the policy changeable between."""
    vr = virtual_robot("feetech")
    policy = SweepPolicy(PolicySpec(control_hz=RATE))
    with RobotSession(
        policy,
        vr.robot,
        vr.path,
        pose_source=vr.pose_address,
        loop=_loop(),
        record_dir=str(tmp_path / "rec"),
        log=lambda s: None,
    ) as session:
        first = session.run_episode({"round": 0})
        assert first.meta["status"] == "ok" and first.data["obs"].shape == (10, 33)
        policy.period_steps = 10  # e.g. an adapted state for the next episode
        second = session.run_episode({"round": 1})
        assert not np.array_equal(first.data["action"], second.data["action"])
        assert _torque(vr) == [1] * 6
    assert _torque(vr) == [0] * 6
    assert session.summary.torque_off_failures == []
    episodes = load_recording(tmp_path / "rec")["episodes"]
    assert [e["round"] for e in episodes] == [0, 1]


def test_corrupted_and_dropped_bytes_are_retried(virtual_robot, tmp_path):
    vr = virtual_robot("dynamixel", "corrupt=0.01,drop=0.01,seed=3")
    s = _deploy(vr, tmp_path, steps=25)
    assert s.bus["crc_errors"] + s.bus["timeouts"] > 0 and s.bus["retries"] > 0
    # Set-up retries harder; in the loop a reply lost twice in a row aborts the episode
    # (a typed bus error), which is recorded like any other.
    assert s.error is None or "Error" in s.error
    assert [e["status"] for e in s.episodes] in (["ok"], ["aborted"], [])
    assert _torque(vr) == [0] * 6
    assert len(load_recording(tmp_path / "rec")["episodes"]) == len(s.episodes)


@pytest.mark.parametrize("protocol", ["dynamixel", "feetech"])
def test_a_silent_servo_aborts_and_the_others_are_switched_off(virtual_robot, tmp_path, protocol):
    vr = virtual_robot(protocol, "silent=3@0.5")
    s = _deploy(vr, tmp_path, steps=100)
    assert "PacketTimeoutError" in s.error and "3" in s.error
    assert s.episodes[-1]["status"] == "aborted"
    # The silent servo executes the torque-off write but cannot confirm it: reported.
    assert any("id 3" in f for f in s.torque_off_failures)
    assert _torque(vr) == [0] * 6
    ep = load_recording(tmp_path / "rec")["episodes"][-1]
    assert ep["status"] == "aborted" and 0 < ep["steps"] < 100


def test_an_overload_aborts_with_torque_off(virtual_robot, tmp_path):
    vr = virtual_robot("dynamixel", "overload=6@0.5")
    s = _deploy(vr, tmp_path, steps=100)
    assert "ServoStatusError" in s.error and "alert" in s.error
    assert s.torque_off_failures == []
    assert _torque(vr) == [0] * 6
    assert load_recording(tmp_path / "rec")["episodes"][-1]["status"] == "aborted"


def test_a_lost_port_is_reported_and_the_servo_watchdog_holds(virtual_robot, tmp_path):
    vr = virtual_robot("dynamixel", "disconnect@0.5")
    s = _deploy(vr, tmp_path, steps=100)
    assert "PortError" in s.error
    assert len(s.torque_off_failures) == 6  # nothing can reach the servos any more
    rec = load_recording(tmp_path / "rec")
    assert rec["episodes"][-1]["status"] == "port_lost"
    # Servo side: the bus watchdog (100 ms) stops every servo once the host is gone.
    time.sleep(0.3)
    assert vr.chain.watchdog_tripped == set(vr.robot.ids)


def test_ctrl_c_is_an_emergency_stop(virtual_robot, tmp_path):
    vr = virtual_robot("feetech")
    timer = threading.Timer(0.6, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        s = _deploy(vr, tmp_path, steps=200)
    finally:
        timer.cancel()
    assert "EmergencyStopError" in s.error
    assert s.episodes[-1]["status"] == "estop"
    assert s.torque_off_failures == [] and _torque(vr) == [0] * 6
    assert load_recording(tmp_path / "rec")["episodes"][-1]["steps"] < 200


def test_a_brief_bus_glitch_skips_cycles_without_aborting(virtual_robot, tmp_path):
    vr = virtual_robot("dynamixel")

    class Glitch(SweepPolicy):
        def act(self, obs):
            if self.t == 5:  # servo 2 goes quiet for 45 ms: two reads fail, then it is back
                vr.command("silent 2")
                threading.Timer(0.045, vr.command, ("speak 2",)).start()
            return super().act(obs)

    s = _deploy(vr, tmp_path, policy=Glitch(PolicySpec(control_hz=RATE)), steps=20)
    assert s.error is None, s.error
    ep = s.episodes[0]
    assert ep["status"] == "ok" and ep["skipped_cycles"] >= 1
    assert load_recording(tmp_path / "rec")["episodes"][0]["steps"] == 20


def test_a_bus_glitch_between_episodes_skips_cycles_without_aborting(virtual_robot, tmp_path):
    # The same 45 ms glitch at the end of an episode: the closing read and the next
    # episode's parking meet it. It once aborted a whole CI demo run while parking.
    vr = virtual_robot("feetech")
    steps = 10

    class Glitch(SweepPolicy):
        def act(self, obs):
            if self.t == steps - 1:
                vr.command("silent 2")
                threading.Timer(0.045, vr.command, ("speak 2",)).start()
            return super().act(obs)

    s = _deploy(vr, tmp_path, policy=Glitch(PolicySpec(control_hz=RATE)), episodes=2, steps=steps)
    assert s.error is None, s.error
    assert [ep["status"] for ep in s.episodes] == ["ok", "ok"]
    assert sum(ep["skipped_cycles"] for ep in s.episodes) >= 1
    assert [e["steps"] for e in load_recording(tmp_path / "rec")["episodes"]] == [steps, steps]


class _Stalls(SweepPolicy):
    def act(self, obs):
        if self.t == 3:
            time.sleep(0.4)
        return super().act(obs)


class _Nan(SweepPolicy):
    def act(self, obs):
        a = super().act(obs)
        if self.t == 4:
            a[2] = np.nan
        return a


def test_the_loop_watchdog_defaults_to_five_periods_and_at_least_100_ms():
    assert LoopConfig(rate_hz=50).watchdog_s == pytest.approx(0.1)
    assert LoopConfig(rate_hz=20).watchdog_s == pytest.approx(0.25)
    assert LoopConfig(rate_hz=200).watchdog_s == pytest.approx(0.1)


def test_the_deadline_watchdog_trips_on_a_stalled_loop(virtual_robot, tmp_path):
    vr = virtual_robot("dynamixel")
    s = _deploy(vr, tmp_path, policy=_Stalls(PolicySpec(control_hz=RATE)), steps=20)
    assert "WatchdogError" in s.error
    assert _torque(vr) == [0] * 6
    assert load_recording(tmp_path / "rec")["episodes"][-1]["status"] == "aborted"


def test_a_nan_action_stops_the_run(virtual_robot, tmp_path):
    vr = virtual_robot("feetech")
    s = _deploy(vr, tmp_path, policy=_Nan(PolicySpec(control_hz=RATE)), steps=20)
    assert "UnsafeCommandError" in s.error
    assert _torque(vr) == [0] * 6
    ep = load_recording(tmp_path / "rec")["episodes"][-1]
    assert ep["steps"] == 3 and np.isnan(ep["data"]["action"]).sum() == 0


def test_activation_refuses_a_robot_file_that_disagrees(virtual_robot, tmp_path):
    vr = virtual_robot("dynamixel")
    wrong = virtual_arm_config("dynamixel")
    wrong.joints["elbow_flex"].offset += 300  # a stale calibration
    path = tmp_path / "wrong.yaml"
    save_robot_file(wrong, path)
    s = _deploy(vr, tmp_path, robot=str(path))
    assert "refusing to enable torque" in s.error and "elbow_flex" in s.error
    assert not s.episodes and _torque(vr) == [0] * 6
    robot = Robot.open(load_robot_file(path), vr.path)
    try:
        robot.connect()
        robot.configure()
        with pytest.raises(ActivationRefusedError, match="servo stores"):
            robot.activate()
    finally:
        robot.disconnect()


def test_calibrate_joints_recovers_the_offsets(virtual_robot, tmp_path):
    vr = virtual_robot("feetech")
    off = virtual_arm_config("feetech")
    for j in off.joints.values():
        j.offset += 25
    path = tmp_path / "arm.yaml"
    save_robot_file(off, path)
    new = calibrate_joints(str(path), vr.path, pose="home", log=lambda s: None)
    truth = virtual_arm_config("feetech")
    for name, j in new.joints.items():
        assert abs(j.offset - truth.joints[name].offset) <= 2, name
    assert load_robot_file(path).to_dict() == new.to_dict()
    assert (tmp_path / "arm.yaml.bak").exists()
    s = _deploy(vr, tmp_path, robot=str(path))
    assert s.error is None


class _ScriptedOnDevice:
    """The sim's scripted grasp controller run as a device policy: it sees only the
    observation the device builds, and its actions go through the device's mapping."""

    def __init__(self, task, grip_force=8.0):
        from metagrasp.sim.scripted import ScriptedGrasp

        self._make = lambda: ScriptedGrasp(task, "grasp-lift", grip_force=grip_force)
        self.spec = PolicySpec(control_hz=25.0)
        self.reset()

    def reset(self):
        self.ctl = self._make()

    def act(self, obs):
        return self.ctl(obs)


class _LetsGoWhileHolding(_ScriptedOnDevice):
    """The scripted grasp, then an opening command (``g = -0.8``) 20 steps into the squeeze."""

    def reset(self):
        super().reset()
        self.squeezed = 0

    def act(self, obs):
        a = np.array(self.ctl(obs), np.float32)
        if self.squeezed >= 20:
            a[5] = -0.8
        elif a[5] > 0:
            self.squeezed += 1
        return a


def _scripted_episode(vr, tmp_path, grip_force=8.0, policy=_ScriptedOnDevice):
    """One 4 s episode of the scripted grasp on ``vr``'s object through the device path:
    (deploy summary, the recorded episode's arrays)."""
    s = deploy(
        policy(vr.task, grip_force=grip_force),
        vr.robot,
        vr.path,
        pose_source=vr.pose_address,
        loop=LoopConfig(rate_hz=25.0, episode_steps=100, park_s=0.3, settle_s=0.3),
        record_dir=str(tmp_path / "rec"),
        log=lambda s: None,
    )
    assert s.error is None, s.error
    return s, load_recording(tmp_path / "rec")["episodes"][0]["data"]


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["dynamixel", "feetech"])
def test_the_scripted_grasp_lifts_the_object_through_the_device_path(
    virtual_robot, tmp_path, protocol
):
    """End to end: device observation -> policy -> device action map -> servo packets ->
    simulated servos -> physics. The object must end up lifted, as in the sim env."""
    vr = virtual_robot(protocol, task_seed=2, shape="box")
    s, ep = _scripted_episode(vr, tmp_path)
    assert s.episodes[0]["timing"]["missed"] <= 2
    obs = ep["obs"]
    lifted = obs[-1, 25] - obs[0, 25]  # obj_z at the end minus at the start
    assert lifted > 0.03, f"object rose {lifted * 100:.1f} cm"
    assert obs[-1, 13] > 0.05  # the gripper's effort: it is squeezing


@pytest.mark.slow
def test_a_crushed_object_gives_way_on_the_virtual_robot_and_the_device_sees_it(
    virtual_robot, tmp_path
):
    """The virtual robot steps physics itself: the collapse of a crushed object must happen
    there too (``GraspEnv.advance_collapse``), or the device could never see a crush."""
    from metagrasp.adapt.reward import DeviceReward, RewardConfig

    vr = virtual_robot("feetech", task=FRAGILE_BOX)
    _, ep = _scripted_episode(vr, tmp_path, grip_force=8.0)
    assert vr.sim_outcome()["crushed"]
    seen = DeviceReward(RewardConfig(detect_collapse=True))
    assert seen.episode(ep["obs"], ep["action"], ep["next_obs"]).crushed
    assert not DeviceReward().episode(ep["obs"], ep["action"], ep["next_obs"]).crushed


@pytest.mark.slow
def test_letting_go_after_a_gentle_squeeze_does_not_crush_on_the_virtual_robot(
    virtual_robot, tmp_path
):
    """A squeeze leaves the gripper's command past-closed, inside the object. Letting go
    must start from the fingers on the robot as in the sim (``ActionMap``'s anti-windup):
    before the shield's velocity limit counted from the joint too, the command crept out
    from past-closed at full current and crushed a fragile object (17.7 N peak on
    ``test-047``, 2026-12-02)."""
    vr = virtual_robot("feetech", task=FRAGILE_BOX)
    _, ep = _scripted_episode(vr, tmp_path, grip_force=2.0, policy=_LetsGoWhileHolding)
    assert (ep["action"][:, 5] == np.float32(-0.8)).sum() >= 10  # it did let go
    seen = vr.sim_outcome()
    assert not seen["crushed"] and seen["grip_peak_n"] < 5.0, seen
