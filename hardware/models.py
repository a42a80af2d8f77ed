"""Servo models a robot file may name: their protocol, units and force-limiting register.

Contract: plain immutable data, looked up by name with :func:`servo_model`. Units are
from the makers' manuals: Dynamixel X-series velocity is 0.229 rev/min per unit (e-manual,
Present Velocity (128)), present current 2.69 mA per unit on XM430; Feetech STS velocity
is in encoder steps per second and load in 0.1 % of stall torque (STS memory table).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from metagrasp.errors import UnknownNameError
from metagrasp.hardware import dynamixel, feetech

__all__ = ["MODELS", "ServoModel", "servo_model"]


@dataclass(frozen=True)
class ServoModel:
    """What the robot layer needs to know about one servo model."""

    name: str
    """Model name as written in robot files (e.g. ``XM430-W350``, ``STS3215``)."""
    protocol: str
    """Wire protocol: ``dynamixel`` or ``feetech``."""
    model_number: int
    """Value of the Model Number register (Dynamixel pings report it too)."""
    table: str
    """Control-table name: ``x_series``, ``xl430`` or ``sts``."""
    position_range: tuple[int, int] = (0, 4095)
    """Raw positions of the single-turn position mode."""
    ticks_per_rev: int = 4096
    """Encoder ticks per output revolution."""
    velocity_unit: float = 1.0
    """Encoder ticks per second per unit of the velocity register."""
    effort_register: str = "present_current"
    """Register read as the servo's effort (current or load), signed."""
    force_limit_register: str | None = "goal_current"
    """RAM register that caps the servo's force in the gripper's mode; None: none."""
    force_limit_full: int = 1193
    """Value of ``force_limit_register`` (and of the effort register) at full force."""
    position_mode: int = dynamixel.OperatingMode.POSITION
    """Operating Mode value for the arm joints (position control)."""
    gripper_mode: int = dynamixel.OperatingMode.CURRENT_BASED_POSITION
    """Operating Mode value for the gripper (position control under a force limit)."""


_DXL_VELOCITY = 0.229 * 4096 / 60.0  # 0.229 rev/min per unit, in ticks/s

MODELS = MappingProxyType(
    {
        m.name: m
        for m in (
            ServoModel("XM430-W350", "dynamixel", 1020, "x_series", velocity_unit=_DXL_VELOCITY),
            ServoModel("XM430-W210", "dynamixel", 1030, "x_series", velocity_unit=_DXL_VELOCITY),
            ServoModel(
                "XM540-W270",
                "dynamixel",
                1120,
                "x_series",
                velocity_unit=_DXL_VELOCITY,
                force_limit_full=2047,
            ),
            # No current sensing: effort is Present Load (0.1 %), no force limit register,
            # so an XL430 cannot run the current-limited gripper (the robot file refuses).
            ServoModel(
                "XL430-W250",
                "dynamixel",
                1060,
                "xl430",
                velocity_unit=_DXL_VELOCITY,
                effort_register="present_load",
                force_limit_register=None,
                force_limit_full=1000,
                gripper_mode=dynamixel.OperatingMode.POSITION,
            ),
            # STS: Torque Limit (48) caps the output in 0.1 % of stall torque in position
            # mode; there is no separate current-based mode.
            ServoModel(
                "STS3215",
                "feetech",
                777,
                "sts",
                effort_register="present_load",
                force_limit_register="torque_limit",
                force_limit_full=1000,
                position_mode=feetech.OperatingMode.POSITION,
                gripper_mode=feetech.OperatingMode.POSITION,
            ),
        )
    }
)
"""Known servo models by name."""

_TABLES = {
    "x_series": dynamixel.X_SERIES_CONTROL_TABLE,
    "xl430": dynamixel.XL430_CONTROL_TABLE,
    "sts": feetech.STS_CONTROL_TABLE,
}


def servo_model(name: str) -> ServoModel:
    """Look a servo model up by name (case-insensitive)."""
    for key, model in MODELS.items():
        if key.lower() == str(name).lower():
            return model
    raise UnknownNameError(
        f"unknown servo model {name!r}; known: {', '.join(MODELS)}. Add an entry to "
        "metagrasp.hardware.models.MODELS with its units if it speaks the same protocol."
    )


def control_table(model: ServoModel):  # noqa: ANN201 (Mapping[str, Register])
    """The control table of ``model``."""
    return _TABLES[model.table]
