"""``metagrasp demo``: the whole story on one machine, on CPU, in a few minutes.

Steps (each prints what it does and the command that does it on its own):

1. **policy**: a shipped pretrained bundle (``assets/pretrained/<name>/policy.onnx``,
   produced by the project's own training; its README holds the commands), or with
   ``--train-quick`` (also when nothing is shipped) meta-train with the ``quick`` preset
   and export, or ``--bundle``;
2. **virtual robot**: the MuJoCo arm behind a pseudo-terminal, with a held-out object
   (a fixed task of the ``test`` split by default);
3. **deploy**: one episode of the unadapted policy through ``deploy``'s safe loop;
4. **calibrate**: K adaptation episodes on the device path (numpy + onnxruntime) with M
   evaluation episodes before and after, the before/after table;
5. **outputs**: ``demo.png`` (before/after plot), ``episode.mp4`` (the last episode,
   rendered offline from the simulator's recorded joint positions), ``summary.json``.

The module imports nothing heavy at import time (the CLI registers its parser from
here); the training-side parts are imported inside :func:`run_demo`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import metagrasp.assets as _assets

__all__ = ["DEFAULT_PRETRAINED", "add_demo_parser", "find_pretrained", "run_demo"]

# Package data of metagrasp.assets: in a checkout, assets/pretrained; installed, beside it.
PRETRAINED = Path(_assets.__file__).resolve().parent / "pretrained"
"""Where shipped bundles live (one folder per bundle, ``policy.onnx`` inside)."""

_HELP = """\
Runs the whole story: policy -> virtual robot -> deploy -> calibrate -> table, plot, video.

On real hardware, point each step at the robot instead:
  policy      --bundle policy.onnx   (from `metagrasp export RUN -o policy.onnx`), or
              --train-quick (meta-train with the quick preset here, then export)
  robot       --robot arm.yaml --port /dev/ttyUSB0   (no virtual robot is started;
              write the file and run `metagrasp calibrate-joints` first, docs/JOURNEYS.md)
  object      --object-pose tcp://HOST:PORT   (your tracker's pose stream) or
              fixed:X,Y,Z[,YAW] (a measured resting pose), and --object NAME
  judging     --ask: you answer 'did it succeed?' after each episode and put the object
              back (on the virtual robot the simulator re-places it by itself)
The same steps one by one: `metagrasp deploy`, `metagrasp calibrate`,
`metagrasp deploy --calibration calibrations/NAME.json`.
"""


DEFAULT_PRETRAINED = "sac-grip-grasp-lift"
"""The shipped bundle the demo uses unless told otherwise: the one that grasps most often
on held-out objects (docs/BENCHMARKS.md, grasp-lift table)."""


def find_pretrained(name: str | None = None) -> Path | None:
    """The shipped bundle ``name`` (else :data:`DEFAULT_PRETRAINED`, else the first one
    shipped), if any."""
    if not PRETRAINED.is_dir():
        return None
    folders = sorted(p for p in PRETRAINED.iterdir() if (p / "policy.onnx").is_file())
    if name is not None:
        folders = [p for p in folders if p.name == name]
    else:
        folders.sort(key=lambda p: p.name != DEFAULT_PRETRAINED)
    return folders[0] / "policy.onnx" if folders else None


def add_demo_parser(sub: Any, handler: Any) -> None:
    """Register ``metagrasp demo``."""
    p = sub.add_parser(
        "demo",
        help="the whole story in minutes on CPU: policy, virtual robot, deploy, calibrate",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="runs/demo", help="output directory")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--bundle", default=None, help="exported policy to use (.onnx)")
    src.add_argument(
        "--train-quick",
        action="store_true",
        help="meta-train with the quick preset and export, instead of the shipped bundle",
    )
    src.add_argument(
        "--pretrained",
        default=None,
        help=f"name of a shipped bundle (default {DEFAULT_PRETRAINED}; see assets/pretrained/)",
    )
    p.add_argument("--algo", default="sac-grip", help="algorithm for --train-quick")
    p.add_argument("--split", default="test", help="held-out split of the object: test or hard")
    p.add_argument("--task-index", type=int, default=0, help="which fixed task of the split")
    p.add_argument("--episodes", type=int, default=3, help="K: calibration episodes")
    p.add_argument("--eval-episodes", type=int, default=2, help="M: evaluation before/after")
    p.add_argument("--protocol", choices=["dynamixel", "feetech"], default="feetech")
    p.add_argument("--robot", default=None, help="robot file of a real arm (with --port)")
    p.add_argument("--port", default=None, help="serial device of a real arm's bus")
    p.add_argument("--object-pose", default=None, help="pose source (real arm)")
    p.add_argument("--object", default=None, help="object name (default: the task's shape)")
    p.add_argument("--ask", action="store_true", help="operator judges success (real arm)")
    p.add_argument(
        "--max-grip",
        type=float,
        default=None,
        metavar="N",
        help="grip force per pad (N) the object tolerates, as `calibrate --max-grip`",
    )
    p.add_argument(
        "--detect-crush",
        action="store_true",
        help="the device finds crushes by itself, as `calibrate --detect-crush` (a "
        "grip-search bundle then needs no operator)",
    )
    p.add_argument("--episode-seconds", type=float, default=0.0, help="shorter episodes (s)")
    p.add_argument("--park-seconds", type=float, default=1.5, help="park before each episode")
    p.add_argument("--settle-seconds", type=float, default=0.5, help="hold before each episode")
    p.add_argument("--no-video", action="store_true", help="skip the video")
    p.add_argument("--seed", type=int, default=0, help="seed of the exploration noise")
    p.set_defaults(handler=handler)


class _Recorder:
    """The virtual robot as a judge that also keeps the current episode's joint positions."""

    def __init__(self, vr: Any) -> None:
        self.vr = vr

    def restart_judging(self) -> None:
        self.vr.trace = []
        self.vr.restart_judging()

    def sim_outcome(self) -> dict[str, Any]:
        return self.vr.sim_outcome()


def _bundle(args: argparse.Namespace, out: Path, log: Any) -> Path:
    from metagrasp.errors import ConfigError

    if args.bundle:
        return Path(args.bundle)
    found = None if args.train_quick else find_pretrained(args.pretrained)
    if found is None and args.pretrained:
        raise ConfigError(f"no shipped bundle {args.pretrained!r} under {PRETRAINED}")
    if found is None:
        from metagrasp.cli import main

        if not args.train_quick:
            log(f"no shipped bundle under {PRETRAINED}: training one with the quick preset")

        run = out / f"run-{args.algo}-quick"
        log(
            f"[1/5] meta-train: metagrasp train --algo {args.algo} --task grasp-lift "
            f"--preset quick --out {run}"
        )
        if main(
            [
                "train",
                "--algo",
                args.algo,
                "--task",
                "grasp-lift",
                "--preset",
                "quick",
                "--out",
                str(run),
                *(["--resume"] if (run / "checkpoints").exists() else []),
            ]
        ):
            raise ConfigError("training failed (see above)")
        path = out / "bundle" / "policy.onnx"
        log(f"[1/5] export: metagrasp export {run} -o {path} --real-episodes 10")
        if main(["export", str(run), "-o", str(path), "--real-episodes", "10"]):
            raise ConfigError("export failed (see above)")
        return path
    note = found.parent / "README.md"
    label = ""
    if note.exists():
        label = next((ln for ln in note.read_text().splitlines() if ln.startswith("#")), "")
    log(f"[1/5] policy: shipped bundle {found} {label.lstrip('# ')} (how it was made: {note})")
    return found


def _plot(summary: dict[str, Any], episodes: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
    names = [n for n in ("before", "after") if summary[n]["n"]]
    for ax, key, label in ((axes[0], "success", "success rate"), (axes[1], "return", "return")):
        if names:
            ys = [summary[n][key] for n in names]
            es = [
                0 if math.isnan(summary[n][key + "_ci95"]) else summary[n][key + "_ci95"]
                for n in names
            ]
            ax.bar(names, ys, yerr=es, capsize=4, color=["#999999", "#3a7bd5"][: len(names)])
        ks = [e["k"] for e in episodes if e["phase"] == "adapt"]
        vs = [float(e["device"][key]) for e in episodes if e["phase"] == "adapt"]
        ax2 = ax.twiny()
        ax2.plot(ks, vs, "o-", color="#d5803a", label="calibration episode k")
        ax2.set_xticks(ks)
        ax2.set_xlabel("calibration episode k", fontsize=8)
        ax.set_ylabel(label)
        if key == "success":
            ax.set_ylim(-0.02, 1.02)
        ax2.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _video(vr: Any, trace: list, path: Path, fps: int) -> Path:
    import mujoco

    from metagrasp.errors import ConfigError
    from metagrasp.sim.cli import _write_video

    data = mujoco.MjData(vr.model)
    renderer = mujoco.Renderer(vr.model, 240, 320)
    frames = []
    try:
        for qpos in trace:
            data.qpos[:] = qpos
            mujoco.mj_forward(vr.model, data)
            renderer.update_scene(data, camera="front")
            frames.append(renderer.render().copy())
    finally:
        renderer.close()
    try:
        _write_video(str(path), frames, fps)
    except ConfigError:
        path = path.with_suffix(".gif")
        _write_video(str(path), frames, fps)
    return path


def run_demo(args: argparse.Namespace) -> int:
    """``metagrasp demo`` (see the module docstring)."""
    from metagrasp.adapt.calibrate import CalibrateConfig, calibrate, format_table
    from metagrasp.adapt.reward import RewardConfig
    from metagrasp.adapt.runtime import load_bundle
    from metagrasp.errors import ConfigError
    from metagrasp.hardware.control_loop import LoopConfig
    from metagrasp.hardware.deploy import deploy
    from metagrasp.hardware.policies import BundlePolicy

    t_start = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = print
    bundle_path = _bundle(args, out, log)
    bundle = load_bundle(bundle_path)
    meta = bundle.metadata
    rate = float(meta.get("control_hz") or 25.0)
    steps = int(meta["episode_length"])
    if args.episode_seconds > 0:
        steps = min(steps, max(1, round(args.episode_seconds * rate)))
    loop = LoopConfig(
        rate_hz=rate, episode_steps=steps, park_s=args.park_seconds, settle_s=args.settle_seconds
    )
    real = args.port is not None
    vr = judge = None
    if real:
        if not args.robot:
            raise ConfigError("--port needs --robot (the real arm's robot file)")
        robot, port = args.robot, args.port
        pose = args.object_pose or "fixed:0.18,0,0.02"
        obj = args.object or "object"
        log(f"[2/5] real robot {robot} on {port}, object pose {pose}")
    else:
        from metagrasp.hardware.robot_config import virtual_arm_config
        from metagrasp.sim.tasks import split_tasks
        from metagrasp.sim.virtual_robot import VirtualRobot

        tasks = split_tasks(args.split)
        if not 0 <= args.task_index < len(tasks):
            raise ConfigError(f"--task-index must be in [0, {len(tasks)}) for split {args.split}")
        task = tasks[args.task_index]
        vr = VirtualRobot(virtual_arm_config(args.protocol), task=task).start()
        judge = _Recorder(vr)
        robot, port, pose = vr.robot, vr.path, vr.pose_address
        obj = args.object or f"{task.shape}-{task.task_id}"
        log(
            f"[2/5] virtual robot ({args.protocol}) on {port}, pose {pose}: held-out "
            f"{args.split} task {task.task_id}, a {task.shape} of {task.mass * 1e3:.0f} g "
            f"(metagrasp virtual-robot --protocol {args.protocol})"
        )
    try:
        log(
            f"[3/5] deploy: metagrasp deploy {bundle_path} --robot ROBOT --port {port} "
            f"--object-pose {pose} --episodes 1 --record {out / 'deploy'}"
        )
        summary = deploy(
            BundlePolicy(bundle),
            robot,
            port,
            pose_source=pose,
            episodes=1,
            loop=loop,
            record_dir=str(out / "deploy"),
            log=log,
        )
        if summary.error:
            raise ConfigError(f"deploy stopped: {summary.error}")
        if vr is not None:
            log(f"      sim: success {int(vr.sim_outcome().get('success', False))}")
        cal_file = out / "calibrations" / f"{obj}.json"
        log(
            f"[4/5] calibrate: metagrasp calibrate {bundle_path} --robot ROBOT --port {port} "
            f"--object-pose {pose} --object {obj} --episodes {args.episodes} "
            f"--eval-episodes {args.eval_episodes} --out {cal_file}"
        )
        ask, answer = args.ask, input
        sees = args.max_grip is not None or args.detect_crush
        if vr is not None and bundle.needs_crush_judgement and not ask and not sees:
            # A grip search needs a crush judgement per episode; on a real arm the
            # operator gives it (--ask), here the simulator plays the operator.
            ask, answer = True, vr.answer
            log("      the simulator answers --ask's questions (succeeded? crushed?)")
        config = CalibrateConfig(
            object_name=obj,
            episodes=args.episodes,
            eval_episodes=args.eval_episodes,
            out=str(cal_file),
            ask=ask,
            seed=args.seed,
            reward=RewardConfig(max_grip_n=args.max_grip, detect_collapse=args.detect_crush),
        )
        report = calibrate(
            str(bundle_path),
            robot,
            port,
            config,
            pose_source=pose,
            loop=loop,
            judge=judge,
            ask=answer,
            log=log,
        )
        trace = list(vr.trace or []) if vr is not None else []
    finally:
        if vr is not None:
            vr.stop()
    print()
    print(format_table(report.summary))
    print(
        f"adaptation on the device: {report.adapt_seconds * 1e3:.1f} ms "
        f"({meta.get('algorithm')}, {'reward-free' if bundle.reward_free else 'uses rewards'})"
    )
    log("[5/5] outputs")
    png = out / "demo.png"
    _plot(
        report.summary,
        report.episodes,
        png,
        f"{meta.get('algorithm')} on {obj}: before/after {args.episodes} calibration episodes",
    )
    log(f"      plot  {png}")
    video = None
    if trace and not args.no_video:
        video = _video(vr, trace, out / "episode.mp4", round(rate))
        log(f"      video {video} (last episode)")
    result = {
        "bundle": str(bundle_path),
        "algorithm": meta.get("algorithm"),
        "object": obj,
        "calibration": report.file,
        "summary": report.summary,
        "adapt_seconds": report.adapt_seconds,
        "plot": str(png),
        "video": str(video) if video else None,
        "seconds": time.monotonic() - t_start,
    }
    (out / "summary.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    log(
        f"done in {result['seconds']:.0f} s; next: metagrasp deploy {bundle_path} --robot ... "
        f"--calibration {report.file}"
    )
    return 0
