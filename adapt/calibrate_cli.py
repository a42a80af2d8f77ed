"""Arguments and handler of ``metagrasp calibrate`` (device side: no torch, no mujoco)."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_calibrate_parser", "run_calibrate"]


def add_calibrate_parser(sub: Any, handler: Any) -> None:
    """Register ``metagrasp calibrate`` on the main CLI's sub-parsers."""
    p = sub.add_parser(
        "calibrate",
        help="few-shot calibration of an exported policy to a new object, on the robot",
        description="Run K episodes on the robot (real or virtual) through the same safety "
        "shield and recording as `deploy`, adapt the bundle on the device with its own "
        "adaptation (numpy + onnxruntime), optionally evaluate M episodes before and after, "
        "and save a calibration file for `deploy --calibration`. Rerunning the same "
        "command after an interruption resumes after the finished episodes.",
    )
    p.add_argument("policy", help="exported policy (.onnx)")
    p.add_argument("--robot", required=True, help="robot file (YAML or JSON)")
    p.add_argument("--port", required=True, help="serial device of the servo bus")
    p.add_argument("--object", required=True, help="name of the object being calibrated for")
    p.add_argument("--episodes", type=int, default=3, help="K: adaptation episodes")
    p.add_argument(
        "--eval-episodes", type=int, default=0, help="M: evaluation episodes before and after"
    )
    p.add_argument("--out", default="", help="calibration file (default: calibrations/OBJECT.json)")
    p.add_argument(
        "--record", default="", help="recording directory (default: beside --out, .episodes)"
    )
    p.add_argument(
        "--object-pose",
        default="fixed:0.18,0,0.02",
        help="object-pose source: fixed:X,Y,Z[,YAW], tcp://HOST:PORT, unix:///PATH or -",
    )
    p.add_argument(
        "--ask",
        action="store_true",
        help="ask the operator after each episode whether it succeeded (and, for a "
        "grip-search bundle, whether the object was crushed), and to reset the object; "
        "the answers replace the device's judgement",
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="evaluation episodes act with the policy's mean (default: like `metagrasp eval`)",
    )
    p.add_argument(
        "--max-grip",
        type=float,
        default=None,
        metavar="N",
        help="grip force per pad (newtons) the object tolerates, if known: squeezing harder "
        "counts as crushing it (a penalty, no success), as in training. Without it the device "
        "cannot see a crush and credits a crushed object's grasp like any other",
    )
    p.add_argument(
        "--detect-crush",
        action="store_true",
        help="judge crushes from the gripper: an object that gives way when crushed lets the "
        "fingers close well past where they met it. For objects that collapse (a cup, a "
        "box, fruit); a crush that leaves the object's shape (an egg's hairline crack) "
        "needs --max-grip or --ask",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the exploration noise")
    p.add_argument("--park-seconds", type=float, default=1.5, help="park before each episode")
    p.add_argument("--settle-seconds", type=float, default=0.5, help="hold before each episode")
    p.add_argument(
        "--episode-seconds",
        type=float,
        default=0.0,
        help="episode length (s; default and maximum: the bundle's)",
    )
    p.add_argument("--json", default=None, help="also write the report as JSON")
    p.set_defaults(handler=handler)


def run_calibrate(args: argparse.Namespace) -> int:
    """CLI handler of ``metagrasp calibrate``."""
    from metagrasp.adapt.calibrate import CalibrateConfig, calibrate, format_table
    from metagrasp.adapt.reward import RewardConfig
    from metagrasp.adapt.runtime import load_bundle
    from metagrasp.hardware.control_loop import LoopConfig

    meta = load_bundle(args.policy).metadata
    rate = float(meta.get("control_hz") or 25.0)
    steps = int(meta["episode_length"])
    if args.episode_seconds > 0:
        steps = min(steps, max(1, round(args.episode_seconds * rate)))
    loop = LoopConfig(
        rate_hz=rate, episode_steps=steps, park_s=args.park_seconds, settle_s=args.settle_seconds
    )
    config = CalibrateConfig(
        object_name=args.object,
        episodes=args.episodes,
        eval_episodes=args.eval_episodes,
        out=args.out,
        record_dir=args.record,
        ask=args.ask,
        deterministic_eval=args.deterministic,
        seed=args.seed,
        reward=RewardConfig(max_grip_n=args.max_grip, detect_collapse=args.detect_crush),
    )
    report = calibrate(
        args.policy, args.robot, args.port, config, pose_source=args.object_pose, loop=loop
    )
    print(format_table(report.summary))
    print(
        f"adaptation: {report.adapt_seconds * 1e3:.1f} ms wall, "
        f"{report.adapt_cpu_seconds * 1e3:.1f} ms CPU; calibration file {report.file}; "
        f"episodes in {report.record_dir}"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(vars(report), fh, indent=1, default=str)
    return 0
