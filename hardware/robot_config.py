"""Robot files: which servo drives each sim joint, and how servo ticks map to joint units.

Contract: a robot file (YAML or JSON, chosen by suffix; YAML also reads JSON) holds::

    name: my-so101
    protocol: dynamixel            # or feetech
    baudrate: 1000000
    timeout_ms: 10                 # per bus transaction attempt
    retries: 1
    bus_watchdog_ms: 100           # Dynamixel servo-side watchdog; 0 = off
    position_tolerance: 0.15       # activation: present position vs file limits (rad/m)
    joints:                        # one entry per sim joint, arm first, gripper last
      shoulder_pan: {id: 1, model: XM430-W350, direction: 1, offset: 2048,
                     ticks_per_unit: 651.8986, min: -1.92, max: 1.92,
                     max_velocity: 3.0, max_step: 0.3}
      ...

``ticks = offset + direction * ticks_per_unit * q`` with ``q`` in the sim's joint units
(rad for the arm, metres of finger travel for the gripper). :func:`load_robot_file` checks
every field and raises :class:`~metagrasp.errors.ConfigError` naming the field and the fix;
:func:`save_robot_file` writes atomically (``calibrate-joints`` uses it for the offsets).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml

from metagrasp.errors import ConfigError
from metagrasp.hardware import dynamixel, feetech
from metagrasp.hardware.models import ServoModel, control_table, servo_model
from metagrasp.hardware.protocol import ServoProtocol
from metagrasp.kinematics import ARM

__all__ = ["JointConfig", "RobotConfig", "load_robot_file", "save_robot_file"]


@dataclass
class JointConfig:
    """One sim joint's servo and its unit conversion."""

    id: int
    """Servo id on the bus."""
    model: str
    """Servo model name (see :data:`metagrasp.hardware.models.MODELS`)."""
    offset: float
    """Raw position (ticks) at joint position 0; ``calibrate-joints`` measures it."""
    ticks_per_unit: float
    """Encoder ticks per joint unit (per rad; per metre of finger travel for the gripper)."""
    min: float
    """Lowest commanded joint position (rad or m); the shield clips targets to it."""
    max: float
    """Highest commanded joint position (rad or m)."""
    direction: int = 1
    """+1 if ticks grow with the joint position, -1 if the servo is mounted mirrored."""
    max_velocity: float = 3.0
    """Fastest the commanded target may move (units/s) beyond the previous command (or
    the present position, when it comes back towards the joint); the shield limits it."""
    max_step: float = 0.35
    """Largest distance of a target from the present position (units); the shield clips."""
    effort_full_scale: float = 0.0
    """Effort-register value at full force (0: the model's force_limit_full)."""
    servo: ServoModel = field(init=False, repr=False)
    """Derived: the servo model."""

    def __post_init__(self) -> None:
        self.servo = servo_model(self.model)
        self.model = self.servo.name
        if self.direction not in (1, -1):
            raise ConfigError(f"direction must be 1 or -1, got {self.direction!r}")
        if not (math.isfinite(self.ticks_per_unit) and self.ticks_per_unit > 0):
            raise ConfigError(f"ticks_per_unit must be > 0, got {self.ticks_per_unit!r}")
        if not self.min < self.max:
            raise ConfigError(f"need min < max, got min={self.min}, max={self.max}")
        if self.max_velocity <= 0 or self.max_step <= 0:
            raise ConfigError("max_velocity and max_step must be > 0")
        if self.effort_full_scale <= 0:
            self.effort_full_scale = float(self.servo.force_limit_full)

    def to_ticks(self, q: float) -> int:
        """Raw position for joint position ``q``."""
        return int(round(self.offset + self.direction * self.ticks_per_unit * q))

    def from_ticks(self, ticks: float) -> float:
        """Joint position for raw position ``ticks``."""
        return (ticks - self.offset) / (self.direction * self.ticks_per_unit)


_JOINT_KEYS = tuple(f.name for f in dataclasses.fields(JointConfig) if f.init)
_ROBOT_KEYS = (
    "name",
    "protocol",
    "baudrate",
    "timeout_ms",
    "retries",
    "bus_watchdog_ms",
    "position_tolerance",
    "joints",
)


@dataclass
class RobotConfig:
    """A parsed robot file: one :class:`JointConfig` per sim joint, in sim order."""

    joints: dict[str, JointConfig]
    """Sim joint name -> servo config, in the order of ``ARM.joint_names``."""
    protocol: str = "dynamixel"
    """Bus protocol: ``dynamixel`` or ``feetech``."""
    name: str = "robot"
    """Free-form name, recorded with every episode."""
    baudrate: int = 1_000_000
    """Bus speed (baud)."""
    timeout_ms: float = 10.0
    """Reply deadline per transaction attempt (ms); keep it below the control period."""
    retries: int = 1
    """Extra attempts after a lost or corrupted reply."""
    bus_watchdog_ms: int = 100
    """Servo-side bus watchdog (Dynamixel, 20 ms units; 0 disables; Feetech has none)."""
    position_tolerance: float = 0.15
    """How far (rad or m) a present position may lie outside [min, max] at activation."""
    ids: tuple[int, ...] = ()
    """Derived: servo ids in sim joint order."""
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """Derived: per-joint vectors (offset, direction, ticks_per_unit, min, max, ...)."""

    def __post_init__(self) -> None:
        if self.protocol not in ("dynamixel", "feetech"):
            raise ConfigError(f"protocol must be 'dynamixel' or 'feetech', got {self.protocol!r}")
        names = tuple(self.joints)
        if set(names) != set(ARM.joint_names):
            missing = [n for n in ARM.joint_names if n not in self.joints]
            extra = [n for n in names if n not in ARM.joint_names]
            raise ConfigError(
                f"robot file joints must be exactly the sim's {list(ARM.joint_names)}; "
                f"missing {missing}, unknown {extra}"
            )
        self.joints = {n: self.joints[n] for n in ARM.joint_names}
        js = list(self.joints.values())
        self.ids = tuple(j.id for j in js)
        if len(set(self.ids)) != len(self.ids):
            raise ConfigError(f"servo ids must be unique, got {list(self.ids)}")
        if len({j.servo.table for j in js}) != 1:
            raise ConfigError("all servos of one robot must share a control table (same series)")
        for name, j in self.joints.items():
            if j.servo.protocol != self.protocol:
                raise ConfigError(f"joint {name}: {j.model} speaks {j.servo.protocol}")
            lo, hi = j.servo.position_range
            for q in (j.min, j.max):
                if not lo <= j.to_ticks(q) <= hi:
                    raise ConfigError(
                        f"joint {name}: limit {q} maps to {j.to_ticks(q)} ticks, outside the "
                        f"servo's {lo}..{hi}; fix offset/ticks_per_unit (run calibrate-joints)"
                    )
        grip = self.joints["gripper"]
        if grip.servo.force_limit_register is None:
            raise ConfigError(
                f"the gripper's {grip.model} has no force-limit register: the policy's "
                "gripper action is a force limit; use a current-sensing model (e.g. XM430)"
            )
        if not 0.0 < self.timeout_ms <= 1000.0 or self.retries < 0:
            raise ConfigError("need 0 < timeout_ms <= 1000 and retries >= 0")
        if not 0 <= self.bus_watchdog_ms <= 127 * 20:
            raise ConfigError("bus_watchdog_ms must be in 0..2540 (20 ms units)")
        self.arrays = {
            k: np.array([float(getattr(j, k)) for j in js])
            for k in (
                "offset",
                "direction",
                "ticks_per_unit",
                "min",
                "max",
                "max_velocity",
                "max_step",
                "effort_full_scale",
            )
        }
        self.arrays["velocity_unit"] = np.array([j.servo.velocity_unit for j in js])

    @property
    def servo_model(self) -> ServoModel:
        """Model of the first servo (all share a protocol and control table)."""
        return next(iter(self.joints.values())).servo

    def bus_protocol(self) -> ServoProtocol:
        """The wire-protocol strategy for this robot's servos."""
        table = control_table(self.servo_model)
        if self.protocol == "dynamixel":
            return dynamixel.DynamixelProtocol(table)
        return feetech.FeetechProtocol(table)

    # Vectorised conversions, in sim joint order.
    def to_ticks(self, q: np.ndarray) -> np.ndarray:
        """Raw goal positions for joint positions ``q`` (6 values)."""
        a = self.arrays
        return np.rint(a["offset"] + a["direction"] * a["ticks_per_unit"] * q).astype(np.int64)

    def from_ticks(self, ticks: np.ndarray) -> np.ndarray:
        """Joint positions for raw positions."""
        a = self.arrays
        return (np.asarray(ticks, float) - a["offset"]) / (a["direction"] * a["ticks_per_unit"])

    def velocity_from_raw(self, raw: np.ndarray) -> np.ndarray:
        """Joint velocities (units/s) for raw velocity-register values."""
        a = self.arrays
        return a["direction"] * np.asarray(raw, float) * a["velocity_unit"] / a["ticks_per_unit"]

    def velocity_to_raw(self, dq: np.ndarray) -> np.ndarray:
        """Raw velocity-register values for joint velocities (simulated servos)."""
        a = self.arrays
        raw = a["direction"] * np.asarray(dq, float) * a["ticks_per_unit"] / a["velocity_unit"]
        return np.rint(raw).astype(np.int64)

    def effort_from_raw(self, raw: np.ndarray) -> np.ndarray:
        """Effort in [-1, 1] as the sim observes it: positive while squeezing (closing)."""
        a = self.arrays
        return -a["direction"] * np.asarray(raw, float) / a["effort_full_scale"]

    def to_dict(self) -> dict[str, Any]:
        """The robot file's content (round-trips through :func:`load_robot_file`)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in _ROBOT_KEYS if k != "joints"}
        out["joints"] = {n: {k: getattr(j, k) for k in _JOINT_KEYS} for n, j in self.joints.items()}
        return out


def _robot_from_dict(data: Any, source: str) -> RobotConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a robot file must be a mapping, got {type(data).__name__}")
    unknown = set(data) - set(_ROBOT_KEYS)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {sorted(unknown)}; allowed {list(_ROBOT_KEYS)}"
        )
    joints_raw = data.get("joints")
    if not isinstance(joints_raw, dict):
        raise ConfigError(f"{source}: 'joints' must map each sim joint name to its servo")
    joints = {}
    for name, spec in joints_raw.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{source}: joint {name!r} must be a mapping")
        bad = set(spec) - set(_JOINT_KEYS)
        if bad:
            raise ConfigError(
                f"{source}: joint {name!r} has unknown key(s) {sorted(bad)}; "
                f"allowed {list(_JOINT_KEYS)}"
            )
        try:
            joints[name] = JointConfig(**spec)
        except TypeError as exc:
            raise ConfigError(f"{source}: joint {name!r}: {exc}") from None
        except ConfigError as exc:
            raise ConfigError(f"{source}: joint {name!r}: {exc}") from None
    rest = {k: v for k, v in data.items() if k != "joints"}
    try:
        return RobotConfig(joints=joints, **rest)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_robot_file(path: str | os.PathLike) -> RobotConfig:
    """Read and check a robot file (``.yaml``/``.yml``/``.json``).

    Raises:
        ConfigError: Missing file, bad syntax, unknown keys, inconsistent values; the
            message names the field.
    """
    p = pathlib.Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read robot file {p}: {exc.strerror}; pass --robot PATH"
        ) from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"robot file {p} is not valid {p.suffix[1:] or 'YAML'}: {exc}") from None
    return _robot_from_dict(data, str(p))


def save_robot_file(config: RobotConfig, path: str | os.PathLike) -> None:
    """Write ``config`` to ``path`` atomically (temp file, fsync, rename)."""
    p = pathlib.Path(path)
    data = config.to_dict()
    text = (
        json.dumps(data, indent=2) + "\n"
        if p.suffix == ".json"
        else yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent or ".")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def virtual_arm_config(protocol: str = "dynamixel") -> RobotConfig:
    """The robot file of metagrasp's virtual arm (the sim's joints on one bus).

    Arm joints: 4096 ticks per turn, zero at the middle of the range (2048), two servos
    mounted mirrored (direction -1) as on real arms; gripper: 20000 ticks per metre of
    finger travel (a rack and pinion), zero (closed) at 1200 ticks. The shipped
    ``examples/robots/virtual-*.yaml`` files are this function's output.
    """
    model = {"dynamixel": "XM430-W350", "feetech": "STS3215"}.get(protocol)
    if model is None:
        raise ConfigError(f"protocol must be 'dynamixel' or 'feetech', got {protocol!r}")
    per_rad = 4096 / (2 * math.pi)
    directions = (1, -1, 1, -1, 1)
    max_velocity = (4.0, 4.0, 4.0, 4.0, 6.0)
    max_step = (0.5, 0.5, 0.5, 0.5, 1.6)
    joints = {}
    for k, name in enumerate(ARM.joint_names[:5]):
        joints[name] = JointConfig(
            id=k + 1,
            model=model,
            offset=2048.0,
            ticks_per_unit=round(per_rad, 4),
            min=ARM.joint_lower[k],
            max=ARM.joint_upper[k],
            direction=directions[k],
            max_velocity=max_velocity[k],
            max_step=max_step[k],
        )
    # The gripper aims 2 cm past closed while squeezing (the current limit sets the force).
    joints["gripper"] = JointConfig(
        id=6,
        model=model,
        offset=1200.0,
        ticks_per_unit=20000.0,
        min=-0.02,
        max=ARM.joint_upper[5],
        max_velocity=0.2,
        max_step=0.08,
    )
    return RobotConfig(
        joints=joints,
        protocol=protocol,
        name=f"virtual-arm-{protocol}",
        timeout_ms=10.0,
        retries=1,
        bus_watchdog_ms=100 if protocol == "dynamixel" else 0,
    )
