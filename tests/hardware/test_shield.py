"""The safety shield: position, step and velocity limits; NaN/inf stop the run."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from metagrasp.errors import ConfigError
from metagrasp.hardware.errors import UnsafeCommandError
from metagrasp.hardware.robot_config import virtual_arm_config
from metagrasp.hardware.shield import SafetyShield, ShieldLimits

LIM = ShieldLimits.from_robot(virtual_arm_config())


def test_each_limit_acts_and_is_counted():
    s = SafetyShield(LIM, 0.02)
    present = np.zeros(6)
    s.reset(present)
    safe, flags = s.filter(np.zeros(6), present)
    assert flags == 0 and np.array_equal(safe, np.zeros(6))
    # Beyond the position limit (and far away): clipped to the limit, then step, velocity.
    target = np.array([5.0, 0, 0, 0, 0, 0])
    safe, flags = s.filter(target, present)
    assert flags == 0b111
    assert safe[0] == pytest.approx(LIM.max_velocity[0] * 0.02)
    assert s.counts["position"][0] == 1 and s.counts["velocity"][0] == 1
    # A far target is limited to max_step from the present position.
    s.reset(present)
    s.period_s = 10.0
    s._max_move = LIM.max_velocity * 10.0
    safe, flags = s.filter(np.array([0, 1.5, 0, 0, 0, 0]), present)
    assert flags == 0b010 and safe[1] == pytest.approx(LIM.max_step[1])


@given(
    st.lists(st.floats(-10, 10), min_size=6, max_size=6),
    st.lists(st.floats(-3, 3), min_size=6, max_size=6),
)
def test_output_always_within_limits(target, present):
    s = SafetyShield(LIM, 0.04)
    p = np.array(present)
    s.reset(p)
    safe, _ = s.filter(np.array(target), p)
    assert np.all(safe >= LIM.lower) and np.all(safe <= LIM.upper)
    inside = (p >= LIM.lower) & (p <= LIM.upper)
    assert np.all(
        np.abs(safe - p)[inside]
        <= np.minimum(LIM.max_step, LIM.max_velocity * 0.04)[inside] + 1e-12
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_stop_the_run(bad):
    s = SafetyShield(LIM, 0.02)
    target = np.zeros(6)
    target[2] = bad
    with pytest.raises(UnsafeCommandError, match="NaN/inf"):
        s.filter(target, np.zeros(6))
    with pytest.raises(UnsafeCommandError):
        s.filter(np.zeros(6), target)


def test_limits_are_checked():
    with pytest.raises(ConfigError):
        ShieldLimits(np.zeros(6), np.zeros(6), np.ones(6), np.ones(6))
    with pytest.raises(ConfigError):
        ShieldLimits(-np.ones(5), np.ones(5), np.ones(5), np.ones(5))
    with pytest.raises(ConfigError):
        SafetyShield(LIM, 0.0)


def test_letting_go_after_a_squeeze_starts_from_the_fingers():
    """A squeeze leaves the gripper's command past-closed, inside the object the fingers
    stopped on. The action map's opening target starts from the fingers; the velocity
    limit must not hold the command inside the object from there (at full current it
    crushed a fragile object on the virtual robot, 17.7 N against a 1.3 N grip)."""
    s = SafetyShield(LIM, 0.04)
    move = LIM.max_velocity[5] * 0.04
    held = np.zeros(6)
    held[5] = 0.020  # the fingers, stopped on a 40 mm object
    s.reset(held)
    squeeze = held.copy()
    for _ in range(10):  # the squeeze's target runs past closed
        squeeze[5] = max(squeeze[5] - move, LIM.lower[5])
        s.filter(squeeze, held)
    assert s._last[5] < held[5] - 2 * move
    let_go = held.copy()
    let_go[5] = held[5] + move  # the action map: from the fingers, one profile step out
    safe, flags = s.filter(let_go, held)
    assert safe[5] == pytest.approx(let_go[5]) and not flags & 0b100
    # Beyond the fingers by more than one step it is still limited, from the fingers.
    s._last = squeeze.copy()
    let_go[5] = held[5] + 3 * move
    safe, flags = s.filter(let_go, held)
    assert safe[5] == pytest.approx(held[5] + move) and flags & 0b100


@given(
    st.lists(st.floats(-3, 3), min_size=6, max_size=6),
    st.lists(st.floats(-3, 3), min_size=6, max_size=6),
    st.lists(st.floats(-3, 3), min_size=6, max_size=6),
)
def test_the_target_moves_at_most_max_velocity_beyond_the_command_or_the_joint(
    last, target, present
):
    s = SafetyShield(LIM, 0.04)
    s.reset(np.clip(last, LIM.lower, LIM.upper))
    prev, p = s._last.copy(), np.array(present)
    safe, _ = s.filter(np.array(target), p)
    move = LIM.max_velocity * 0.04
    lo = np.maximum(np.minimum(prev, p) - move, np.maximum(p - LIM.max_step, LIM.lower))
    hi = np.minimum(np.maximum(prev, p) + move, np.minimum(p + LIM.max_step, LIM.upper))
    ok = lo <= hi  # else the position limit has the last word (a joint pushed past it)
    assert np.all((safe >= lo - 1e-12)[ok]) and np.all((safe <= hi + 1e-12)[ok])
    # A target the limits allow passes unchanged.
    inside = ok & (np.array(target) >= lo) & (np.array(target) <= hi)
    assert np.allclose(safe[inside], np.array(target)[inside])
