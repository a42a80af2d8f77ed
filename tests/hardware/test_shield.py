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
