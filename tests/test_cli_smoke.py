"""End-to-end CLI smoke runs with tiny budgets."""

import json
import subprocess
import sys

import imageio.v2 as imageio


def _cli(*args, cwd=None):
    out = subprocess.run(
        [sys.executable, "-m", "metagrasp.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_envs_json_lists_families_and_splits():
    data = json.loads(_cli("envs", "--json", "--show-tasks", "test"))
    names = {f["name"] for f in data["families"]}
    assert {"reach", "grasp-lift", "place"} <= names
    assert set(data["families"][0]["splits"]) == {"train", "val", "test", "hard"}
    assert len(data["tasks"]["test"]) >= 40


def test_rollout_writes_a_video(tmp_path):
    gif = tmp_path / "ep.gif"
    out = _cli("rollout", "--episodes", "2", "--video", str(gif), "--size", "64")
    assert "success rate" in out
    frames = imageio.mimread(gif)
    assert len(frames) > 10 and frames[0].shape[:2] == (48, 64)


def test_rollout_mp4_and_png(tmp_path):
    for name in ("ep.mp4", "last.png"):
        _cli(
            "rollout",
            "--policy",
            "random",
            "--task",
            "place",
            "--split",
            "hard",
            "--video",
            str(tmp_path / name),
            "--size",
            "64",
        )
        assert (tmp_path / name).stat().st_size > 1000


def test_rollout_refuses_a_family_without_an_arm_scene(capsys):
    from metagrasp.cli import main

    assert main(["rollout", "--task", "point-nav", "--video", ""]) == 2
    assert "not a grasp family" in capsys.readouterr().err
