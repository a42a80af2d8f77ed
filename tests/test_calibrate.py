"""On-device calibration (issue #7): calibration files, resume after an interruption,
`deploy --calibration`, and the device path free of torch and mujoco.

Episodes are short (10 steps at 25 Hz) against the virtual robot on a real pty."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from metagrasp.adapt.calibrate import CalibrateConfig, calibrate, format_table
from metagrasp.adapt.calibration_file import (
    Calibration,
    CalibrationFileError,
    check_bundle,
    load_calibration,
    save_calibration,
)
from metagrasp.adapt.reward import DeviceReward, RewardConfig
from metagrasp.adapt.runtime import load_bundle
from metagrasp.errors import ConfigError
from metagrasp.hardware.control_loop import LoopConfig
from metagrasp.hardware.recorder import load_recording
from metagrasp.hardware.robot_config import virtual_arm_config
from metagrasp.sim.tasks import split_tasks
from metagrasp.sim.virtual_robot import VirtualRobot
from tests.bundles import GRASP_SPEC, cavia_bundle, grip_bundle, write_plan

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="needs os.openpty"),
    pytest.mark.usefixtures("one_torch_thread"),
]

REPO = Path(__file__).resolve().parents[1]


"""The grasp families' spec, for bundles of untrained algorithms."""


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundles")
    return cavia_bundle(d / "a" / "policy.onnx", 0), cavia_bundle(d / "b" / "policy.onnx", 1)


def _loop():
    return LoopConfig(rate_hz=25.0, episode_steps=10, park_s=0.2, settle_s=0.1)


def _calibrate_on_virtual_robot(path, config, **kw):
    """``calibrate`` against a fresh Feetech virtual robot, stopped afterwards."""
    vr = VirtualRobot(virtual_arm_config("feetech")).start()
    try:
        return calibrate(
            path,
            vr.robot,
            vr.path,
            config,
            pose_source=vr.pose_address,
            loop=_loop(),
            log=lambda s: None,
            **kw,
        )
    finally:
        vr.stop()


# ----------------------------------------------------------------- calibration files
def _calibration(bundle_path):
    bundle = load_bundle(bundle_path)
    state = {k: v + 0.125 for k, v in bundle.init_state().items()}
    return Calibration(
        object="mug",
        bundle={"file": bundle_path, "sha256": bundle.metadata["sha256"]},
        state=state,
        episodes=[{"file": "episode_000000.npz", "sha256": "ab" * 32}],
        settings={"episodes": 3},
    )


def test_calibration_files_round_trip_and_reject_tampering(tmp_path, bundles):
    cal = _calibration(bundles[0])
    path = save_calibration(cal, tmp_path / "cal" / "mug.json")
    assert [p.name for p in path.parent.iterdir()] == ["mug.json"]  # no temp file left
    back = load_calibration(path)
    assert back.object == "mug" and back.created and back.settings == {"episodes": 3}
    for k, v in cal.state.items():
        np.testing.assert_array_equal(back.state[k], v)  # float32 exactly
        assert back.state[k].dtype == np.float32
    check_bundle(back, load_bundle(bundles[0]))
    with pytest.raises(CalibrationFileError, match="made for bundle"):
        check_bundle(back, load_bundle(bundles[1]))

    content = json.loads(path.read_text())
    name = next(iter(content["state"]))
    content["state"][name]["data"][0] += 1e-3  # one edited value
    path.write_text(json.dumps(content))
    with pytest.raises(CalibrationFileError, match="integrity"):
        load_calibration(path)
    path.write_text(path.read_text()[:100])  # truncated
    with pytest.raises(CalibrationFileError, match="unreadable"):
        load_calibration(path)
    with pytest.raises(CalibrationFileError, match="does not exist"):
        load_calibration(tmp_path / "none.json")
    with pytest.raises(ConfigError):
        CalibrateConfig("a/b")


# ------------------------------------------------------------- interrupt and resume
def test_an_interrupted_calibration_keeps_its_episodes_and_resumes(tmp_path, bundles):
    task = split_tasks("test")[1]
    out = tmp_path / "cal" / "cube.json"
    config = CalibrateConfig("cube", episodes=3, eval_episodes=1, out=str(out), ask=True)
    answers = iter(["n", "", "y", ""])  # eval episode: no; adaptation episode 0: yes

    def ask_then_interrupt(prompt):
        try:
            return next(answers)
        except StopIteration:
            raise KeyboardInterrupt from None  # Ctrl-C at the prompt after episode 2

    vr = VirtualRobot(virtual_arm_config("dynamixel"), task=task).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            calibrate(
                bundles[0],
                vr.robot,
                vr.path,
                config,
                pose_source=vr.pose_address,
                loop=_loop(),
                judge=vr,
                ask=ask_then_interrupt,
                log=lambda s: None,
            )
        assert all(vr.chain.get(i, "torque_enable") == 0 for i in vr.robot.ids)
        rec = load_recording(config.record_dir)["episodes"]
        assert [e["calibration"]["phase"] for e in rec] == ["before", "adapt", "adapt"]
        assert not out.exists()

        report = calibrate(
            bundles[0],
            vr.robot,
            vr.path,
            config,
            pose_source=vr.pose_address,
            loop=_loop(),
            judge=vr,
            ask=lambda p: "y",
            log=lambda s: None,
        )
    finally:
        vr.stop()
    # The two answered episodes were reused (with the operator's answers); the third,
    # whose answer was never given, ran again, then the rest.
    assert report.resumed == 2
    phases = [(e["phase"], e["k"]) for e in report.episodes]
    assert phases == [("before", 0), ("adapt", 0), ("adapt", 1), ("adapt", 2), ("after", 3)]
    assert [e["device"]["success"] for e in report.episodes] == [False, True, True, True, True]
    assert all("sim" in e and "success" in e["sim"] for e in report.episodes)
    assert len(load_recording(config.record_dir)["episodes"]) == 6  # 3 + 3, none replaced
    cal = load_calibration(out)
    assert [Path(e["file"]).name for e in cal.episodes] == [
        Path(e["file"]).name for e in report.episodes if e["phase"] == "adapt"
    ]
    assert all(len(e["sha256"]) == 64 for e in cal.episodes)
    assert cal.results["summary"]["after"]["n"] == 1
    # Replaying adaptation over the recorded episodes reproduces the saved state.
    bundle = load_bundle(bundles[0])
    batch = []
    for e in cal.episodes:
        with np.load(e["file"]) as z:
            out = DeviceReward().episode(z["obs"], z["action"], z["next_obs"])
            batch.append(
                {
                    "obs": z["obs"],
                    "actions": z["action"],
                    "next_obs": z["next_obs"],
                    "rewards": out.rewards,
                    "dones": out.dones,
                    "mask": out.mask,
                }
            )
    state = bundle.init_state()
    for i in range(1, 4):
        state = bundle.adapt(state, batch[:i])
    np.testing.assert_array_equal(cal.state["context"], state["context"])
    assert not np.allclose(cal.state["context"], bundle.init_state()["context"])
    assert "before" in format_table(report.summary)


# --------------------------------------------------- the device path, in a subprocess
def test_calibrate_and_deploy_with_the_calibration_import_neither_torch_nor_mujoco(
    tmp_path, bundles
):
    vr = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "metagrasp.cli",
            "virtual-robot",
            "--protocol",
            "feetech",
            "--seconds",
            "120",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = [vr.stdout.readline() for _ in range(2)]
        port = lines[0].split("device:")[1].strip()
        pose = lines[1].split("object pose:")[1].strip()
        robot = REPO / "examples" / "robots" / "virtual-feetech.yaml"
        code = textwrap.dedent(
            f"""
            import sys
            from metagrasp.cli import main
            common = ["--robot", {str(robot)!r}, "--port", {port!r}, "--object-pose", {pose!r}]
            fast = ["--episode-seconds", "0.4", "--park-seconds", "0.2", "--settle-seconds", "0.1"]
            rc = main(["calibrate", {bundles[0]!r}, "--object", "cube", "--episodes", "2",
                       "--out", {str(tmp_path / "cube.json")!r}, *common, *fast])
            assert rc == 0, rc
            rc = main(["deploy", {bundles[0]!r}, "--calibration", {str(tmp_path / "cube.json")!r},
                       "--episodes", "1", *common, "--episode-seconds", "0.4",
                       "--park-seconds", "0.2", "--settle-seconds", "0.1"])
            assert rc == 0, rc
            rc = main(["deploy", {bundles[1]!r}, "--calibration", {str(tmp_path / "cube.json")!r},
                       *common])
            assert rc == 2, rc  # another bundle's calibration is refused
            bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "mujoco"))
            assert not bad, bad
            print("DEVICE-PATH-OK")
            """
        )
        env = {**os.environ, "PYTHONPATH": ""}
        res = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp_path,
        )
    finally:
        vr.terminate()
        vr.wait(timeout=10)
    assert "DEVICE-PATH-OK" in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]
    assert "made for bundle" in res.stderr
    assert load_calibration(tmp_path / "cube.json").settings["episodes"] == 2


# ------------------------------------------- every exportable adaptation kind works
def _bundle_of(name, path):
    from metagrasp.policies.pearl import PEARL, PEARLConfig
    from metagrasp.policies.rl2 import RL2, RL2Config
    from metagrasp.policies.rma import RMA, RMAConfig

    cls, cfg = {"pearl": (PEARL, PEARLConfig), "rl2": (RL2, RL2Config), "rma": (RMA, RMAConfig)}[
        name
    ]
    return write_plan(cls(cfg(), GRASP_SPEC, 0).export_modules(), GRASP_SPEC, path)


@pytest.mark.parametrize("name", ["pearl", "rl2", "rma"])
def test_latent_recurrent_and_reward_free_bundles_calibrate(tmp_path, name):
    path = _bundle_of(name, tmp_path / name / "policy.onnx")
    bundle = load_bundle(path)
    config = CalibrateConfig(name, episodes=2, out=str(tmp_path / f"{name}.json"))
    report = _calibrate_on_virtual_robot(path, config)
    cal = load_calibration(report.file)
    init = bundle.init_state()
    assert set(cal.state) == set(init)
    changed = [k for k in init if not np.array_equal(cal.state[k], init[k])]
    if name == "rl2":  # no adapt graph: the hidden state is carried, the episode ended
        assert cal.settings["adaptation"] == "carry"
        assert "hidden" in changed and float(cal.state["prev_done"].max()) == 1.0
    else:
        assert changed, "adaptation changed nothing"
    assert cal.settings["reward_free"] is (name == "rma")


# ------------------------------------------------- the grip search (sac-grip) on the device
def test_a_grip_search_bundle_needs_a_crush_judgement_and_searches_on_the_answers(tmp_path):
    path = grip_bundle(tmp_path / "grip" / "policy.onnx")
    config = CalibrateConfig("egg", episodes=2, out=str(tmp_path / "egg.json"))
    with pytest.raises(ConfigError, match="--ask .* --max-grip N .* or --detect-crush"):
        calibrate(path, virtual_arm_config("feetech"), "/dev/null", config, log=lambda s: None)
    config = CalibrateConfig("egg", episodes=2, out=str(tmp_path / "egg.json"), ask=True)
    prompts = []

    def operator(prompt):  # nothing lifted; the first episode crushed the egg
        prompts.append(prompt)
        return "y" if "crushed" in prompt and len(prompts) < 3 else "n"

    report = _calibrate_on_virtual_robot(path, config, ask=operator)
    assert sum("crushed" in p for p in prompts) == 2
    assert [e["device"]["crushed"] for e in report.episodes] == [True, False]
    # 4 N crushed it: halve the log range to 0.5-4 N; then 1.41 N dropped it: 1.41-4 N.
    cal = load_calibration(report.file)
    assert cal.settings["adaptation"] == "grip_search"
    np.testing.assert_allclose(cal.state["grip"], [[math.sqrt(math.sqrt(2.0) * 4.0)]], rtol=1e-6)


def test_the_device_can_judge_crushes_itself_for_a_grip_search(tmp_path):
    """--detect-crush: no operator, no limit; the search runs on the device's own flags.
    A recurrent bundle, which needs a reward every step, is refused before the arm moves."""
    config = CalibrateConfig(
        "cup",
        episodes=1,
        out=str(tmp_path / "cup.json"),
        reward=RewardConfig(detect_collapse=True),
    )
    rl2 = _bundle_of("rl2", tmp_path / "rl2" / "policy.onnx")
    with pytest.raises(ConfigError, match="--detect-crush judges whole episodes"):
        calibrate(rl2, virtual_arm_config("feetech"), "/dev/null", config, log=lambda s: None)

    def nobody(prompt):
        raise AssertionError(f"asked {prompt!r} with no operator")

    report = _calibrate_on_virtual_robot(
        grip_bundle(tmp_path / "grip" / "policy.onnx"), config, ask=nobody
    )
    (episode,) = report.episodes
    assert not episode["device"]["crushed"]  # the untrained arm never squeezes the cup
    # Not lifted, not crushed: more force, the log midpoint of 4 N and 20 N.
    cal = load_calibration(report.file)
    np.testing.assert_allclose(cal.state["grip"], [[math.sqrt(4.0 * 20.0)]], rtol=1e-6)
