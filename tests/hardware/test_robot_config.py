"""Robot files: loading, validation, unit conversion, atomic saving."""

import json
import pathlib

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from metagrasp.errors import ConfigError, UnknownNameError
from metagrasp.hardware.robot_config import (
    load_robot_file,
    save_robot_file,
    virtual_arm_config,
)
from metagrasp.kinematics import ARM

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("protocol", ["dynamixel", "feetech"])
def test_shipped_virtual_robot_files_are_the_virtual_arm(protocol):
    shipped = load_robot_file(ROOT / f"examples/robots/virtual-{protocol}.yaml")
    assert shipped.to_dict() == virtual_arm_config(protocol).to_dict()
    assert tuple(shipped.joints) == ARM.joint_names
    assert shipped.protocol == protocol


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_load_round_trip(tmp_path, suffix):
    cfg = virtual_arm_config("feetech")
    path = tmp_path / f"arm{suffix}"
    save_robot_file(cfg, path)
    assert load_robot_file(path).to_dict() == cfg.to_dict()
    assert not list(tmp_path.glob(".arm*"))  # no temp files left behind


def _write(tmp_path, data):
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(colour="red"), "unknown key"),
        (lambda d: d["joints"].pop("gripper"), "missing \\['gripper'\\]"),
        (lambda d: d["joints"]["gripper"].update(id=1), "unique"),
        (lambda d: d["joints"]["elbow_flex"].update(offset=4000), "outside the servo's"),
        (lambda d: d["joints"]["elbow_flex"].update(direction=2), "direction"),
        (lambda d: d["joints"]["elbow_flex"].update(min=2.0), "min < max"),
        (lambda d: d["joints"]["elbow_flex"].update(speed=2.0), "unknown key"),
        (lambda d: d.update(protocol="can"), "protocol"),
        (lambda d: d["joints"]["gripper"].update(model="STS3215"), "share a control table"),
    ],
)
def test_bad_robot_files_name_the_problem(tmp_path, edit, match):
    data = virtual_arm_config("dynamixel").to_dict()
    edit(data)
    with pytest.raises(ConfigError, match=match):
        load_robot_file(_write(tmp_path, data))


def test_unknown_model_missing_file_and_bad_syntax(tmp_path):
    data = virtual_arm_config("dynamixel").to_dict()
    data["joints"]["gripper"]["model"] = "XM9000"
    with pytest.raises((ConfigError, UnknownNameError), match="XM9000"):
        load_robot_file(_write(tmp_path, data))
    with pytest.raises(ConfigError, match="cannot read"):
        load_robot_file(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid json"):
        load_robot_file(bad)
    data = virtual_arm_config("dynamixel").to_dict()
    data["joints"]["gripper"]["model"] = "XL430-W250"
    for j in data["joints"].values():
        j["model"] = "XL430-W250"
    with pytest.raises(ConfigError, match="force-limit"):
        load_robot_file(_write(tmp_path, data))
    assert json.loads(json.dumps(virtual_arm_config().to_dict()))


@given(st.lists(st.floats(-1.0, 1.0), min_size=6, max_size=6))
def test_tick_conversion_round_trips_within_half_a_tick(fractions):
    cfg = virtual_arm_config("dynamixel")
    a = cfg.arrays
    q = a["min"] + (np.array(fractions) + 1) / 2 * (a["max"] - a["min"])
    ticks = cfg.to_ticks(q)
    assert ticks.dtype == np.int64
    assert np.all(np.abs(cfg.from_ticks(ticks) - q) <= 0.5 / a["ticks_per_unit"] + 1e-12)
    raw = cfg.velocity_to_raw(q)
    assert np.all(
        np.abs(cfg.velocity_from_raw(raw) - q) <= a["velocity_unit"] / a["ticks_per_unit"]
    )
    # Direction flips the sign of ticks around the offset.
    j = cfg.joints["shoulder_lift"]
    assert j.direction == -1 and j.to_ticks(0.1) < j.offset
