"""CLI smoke runs: `metagrasp virtual-robot` in one process, `metagrasp deploy` in another,
talking over the pty exactly as with a USB adapter; SIGINT is an e-stop."""

import pathlib
import signal
import subprocess
import sys
import time

import pytest

from metagrasp.hardware.recorder import load_recording

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")


def _metagrasp(*args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "metagrasp.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


@pytest.fixture
def virtual_robot_process():
    proc = _metagrasp(
        "virtual-robot", "--protocol", "feetech", "--seconds", "60", stdin=subprocess.PIPE
    )
    device = pose = None
    for _ in range(20):
        line = proc.stdout.readline()
        if line.startswith("device: "):
            device = line.split(": ", 1)[1].strip()
        if line.startswith("object pose: "):
            pose = line.split(": ", 1)[1].strip()
        if device and pose:
            break
    assert device and pose, "virtual robot did not print its addresses"
    yield proc, device, pose
    proc.terminate()
    proc.wait(timeout=10)


def test_help_of_the_hardware_commands():
    for cmd in ("deploy", "calibrate-joints", "virtual-robot"):
        out = subprocess.run(
            [sys.executable, "-m", "metagrasp.cli", cmd, "--help"], capture_output=True, text=True
        )
        assert out.returncode == 0 and "usage" in out.stdout


def test_deploy_cli_against_the_virtual_robot_then_sigint(virtual_robot_process, tmp_path):
    _, device, pose = virtual_robot_process
    common = [
        "--robot",
        str(ROOT / "examples/robots/virtual-feetech.yaml"),
        "--port",
        device,
        "--object-pose",
        pose,
        "--record",
        str(tmp_path / "rec"),
        "--park-seconds",
        "0.2",
        "--settle-seconds",
        "0.1",
        "--rate",
        "50",
    ]
    done = _metagrasp(
        "deploy",
        "builtin:sweep",
        *common,
        "--episode-seconds",
        "0.3",
        "--json",
        str(tmp_path / "s.json"),
    )
    out, _ = done.communicate(timeout=60)
    assert done.returncode == 0, out
    assert "torque off on every servo" in out and "missed deadlines" in out
    # A long run stopped by SIGINT: e-stop, torque off, the episode in flight recorded.
    run = _metagrasp("deploy", "builtin:hold", *common, "--episode-seconds", "30")
    time.sleep(3.0)
    run.send_signal(signal.SIGINT)
    out, _ = run.communicate(timeout=30)
    assert run.returncode == 1, out
    assert "EmergencyStopError" in out and "torque off on every servo" in out
    episodes = load_recording(tmp_path / "rec")["episodes"]
    assert [e["status"] for e in episodes] == ["ok", "estop"]
