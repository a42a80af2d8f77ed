"""Command-line parts of the hardware layer: ``deploy``, ``calibrate-joints``, ``virtual-robot``.

Contract: :func:`add_hardware_parsers` registers the three sub-commands on the main CLI's
sub-parser set; handlers import their implementation lazily, and the device-side ones
(``deploy``, ``calibrate-joints``) never import torch or mujoco. ``virtual-robot`` runs the
MuJoCo sim (:mod:`metagrasp.sim.virtual_robot`) and needs the training extra.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_hardware_parsers"]


def _floats(text: str, n: int, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise argparse.ArgumentTypeError(f"{what} needs {n} comma-separated numbers")
    return values


def run_deploy(args: argparse.Namespace) -> int:
    """Handler of ``metagrasp deploy``."""
    from metagrasp.hardware.control_loop import LoopConfig
    from metagrasp.hardware.deploy import deploy
    from metagrasp.hardware.policies import load_policy

    policy = load_policy(args.policy, action_mode=args.action_mode)
    if args.calibration:
        _use_calibration(policy, args.calibration)
    rate = args.rate or policy.spec.control_hz
    loop = LoopConfig(
        rate_hz=rate,
        episode_steps=max(1, round(args.episode_seconds * rate)),
        park_s=args.park_seconds,
        settle_s=args.settle_seconds,
        place_goal=_floats(args.goal, 3, "--goal") if args.goal else None,
        realtime_priority=args.realtime_priority,
    )
    summary = deploy(
        policy,
        args.robot,
        args.port,
        pose_source=args.object_pose,
        episodes=args.episodes,
        loop=loop,
        record_dir=args.record,
        park_on_exit=not args.no_park,
    )
    t = summary.timing
    if t:
        print(
            f"{t['cycles']} cycles at {rate:g} Hz: period p50 {t.get('period_p50_ms', 0):.2f} ms, "
            f"p99 {t.get('period_p99_ms', 0):.2f} ms, max {t.get('period_max_ms', 0):.2f} ms; "
            f"missed deadlines {t['missed']} ({100 * t['missed_fraction']:.2f} %)"
        )
    if summary.recording:
        print(f"recorded {len(summary.episodes)} episode(s) in {summary.recording}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(vars(summary), fh, indent=2, default=_jsonable)
    if summary.torque_off_failures:
        return 3
    return 0 if summary.error is None else 1


def _use_calibration(policy: Any, path: str) -> None:
    """Start every episode from a calibration file's adapted state (same bundle only)."""
    from metagrasp.adapt.calibration_file import check_bundle, load_calibration
    from metagrasp.errors import ConfigError
    from metagrasp.hardware.policies import BundlePolicy

    if not isinstance(policy, BundlePolicy):
        raise ConfigError("--calibration needs an exported policy (.onnx), not a built-in")
    cal = load_calibration(path)
    check_bundle(cal, policy.bundle, path)
    policy.set_task_state(cal.state or policy.state)
    print(f"using calibration {path} (object {cal.object!r}, made {cal.created})")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def run_calibrate(args: argparse.Namespace) -> int:
    """Handler of ``metagrasp calibrate-joints``."""
    from metagrasp.hardware.deploy import calibrate_joints

    def confirm(prompt: str) -> None:
        if not args.yes:
            input(prompt + " ")

    calibrate_joints(
        args.robot,
        args.port,
        pose=args.pose,
        confirm=confirm,
        write_limits=args.write_limits,
        reboot=args.reboot,
        out_file=args.out,
    )
    return 0


def run_virtual_robot(args: argparse.Namespace) -> int:
    """Handler of ``metagrasp virtual-robot`` (training side: runs MuJoCo)."""
    from metagrasp.sim.virtual_robot import serve_cli

    return serve_cli(args)


def add_hardware_parsers(sub: Any) -> None:
    """Register ``deploy``, ``calibrate-joints`` and ``virtual-robot`` on ``sub``."""
    p = sub.add_parser(
        "deploy",
        help="run a policy on a robot (real or virtual) with the safe control loop",
        description="Connect to the servos named in a robot file, run episodes of a policy "
        "at a fixed rate through the safety shield, record every episode, and switch "
        "torque off on every exit path (Ctrl-C included).",
    )
    p.add_argument("policy", help="exported policy (.onnx) or builtin:hold / builtin:sweep")
    p.add_argument("--robot", required=True, help="robot file (YAML or JSON)")
    p.add_argument("--port", required=True, help="serial device of the servo bus")
    p.add_argument("--episodes", type=int, default=1, help="number of episodes")
    p.add_argument("--rate", type=float, default=None, help="loop rate (Hz; default: the policy's)")
    p.add_argument("--episode-seconds", type=float, default=4.0, help="episode length (s)")
    p.add_argument(
        "--object-pose",
        default="fixed:0.18,0,0.02",
        help="object-pose source: fixed:X,Y,Z[,YAW], tcp://HOST:PORT, unix:///PATH or - (stdin)",
    )
    p.add_argument("--goal", default=None, help="place target X,Y,Z (task 'place' only)")
    p.add_argument("--record", default=None, help="recording directory (episodes are appended)")
    p.add_argument("--park-seconds", type=float, default=1.5, help="park before each episode (s)")
    p.add_argument("--settle-seconds", type=float, default=0.5, help="hold before each episode (s)")
    p.add_argument("--no-park", action="store_true", help="do not park before torque off at exit")
    p.add_argument(
        "--action-mode", choices=["ee", "joint"], default=None, help="built-in policies only"
    )
    p.add_argument("--json", default=None, help="also write the session summary as JSON")
    p.add_argument(
        "--calibration",
        default=None,
        help="calibration file from `metagrasp calibrate` (refused if made for another bundle)",
    )
    p.add_argument(
        "--realtime-priority",
        type=int,
        default=0,
        help="run the loop under SCHED_FIFO at this priority (Linux, needs privileges)",
    )
    p.set_defaults(handler=run_deploy)

    p = sub.add_parser(
        "calibrate-joints",
        help="measure the servo offsets of a robot file with the arm in a reference pose",
        description="Switch torque off, let you put the arm in a reference pose, read every "
        "servo's position and write the offsets into the robot file (old file kept as .bak).",
    )
    p.add_argument("--robot", required=True, help="robot file to update")
    p.add_argument("--port", required=True, help="serial device of the servo bus")
    p.add_argument("--pose", choices=["zero", "home"], default="zero", help="reference pose")
    p.add_argument("--yes", action="store_true", help="do not wait for Enter (arm already posed)")
    p.add_argument("--write-limits", action="store_true", help="store the limits in the servos")
    p.add_argument("--reboot", action="store_true", help="reboot the servos first (clear faults)")
    p.add_argument("--out", default=None, help="write to this file instead of --robot")
    p.set_defaults(handler=run_calibrate)

    p = sub.add_parser(
        "virtual-robot",
        help="serve the MuJoCo arm as servos on a pseudo-terminal (for deploy without hardware)",
        description="Start the grasp sim behind a pseudo-terminal that answers Dynamixel or "
        "Feetech packets like a chain of real servos, step it in real time, serve the "
        "object pose on a local socket, and inject faults on demand. Prints the device path "
        "and the pose address, then runs until Ctrl-C. Fault commands may also be typed on "
        "stdin: overload ID, silent ID, speak ID, slow ID MS, corrupt P, drop P, disconnect.",
    )
    p.add_argument("--protocol", choices=["dynamixel", "feetech"], default="dynamixel")
    p.add_argument("--robot", default=None, help="robot file (default: the shipped virtual arm)")
    p.add_argument("--object", default=None, help="object shape (see `metagrasp envs`)")
    p.add_argument("--task-seed", type=int, default=0, help="seed of the task and placements")
    p.add_argument(
        "--faults",
        default="",
        help="comma-separated faults: corrupt=P, drop=P, slow=ID:MS, silent=ID[@T], "
        "overload=ID[@T], disconnect@T, seed=N (T: s after torque is first enabled)",
    )
    p.add_argument("--pose-port", type=int, default=0, help="TCP port of the pose stream")
    p.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: never)")
    p.add_argument(
        "--realtime-priority", type=int, default=0, help="serve under SCHED_FIFO (Linux)"
    )
    p.set_defaults(handler=run_virtual_robot)
