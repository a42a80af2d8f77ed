"""Implementations of the sim-side CLI commands: ``envs``, ``rollout``, ``sim-bench``."""

from __future__ import annotations

import argparse
import importlib
import json
import os

import numpy as np

from metagrasp.errors import ConfigError
from metagrasp.sim.registry import FAMILIES, get_family
from metagrasp.sim.tasks import (
    HARD_CRUSH,
    HARD_FRICTION,
    HARD_MASS,
    HELD_OUT_MASS,
    HELD_OUT_SHAPES,
    TRAIN_SHAPES,
    check_split,
    split_tasks,
)

SPLIT_NOTES = {
    "train": f"distribution: shapes {list(TRAIN_SHAPES)}, mass outside the held-out band "
    f"{list(HELD_OUT_MASS)} kg",
    "val": f"{len(split_tasks('val'))} fixed tasks drawn from the train distribution "
    "(for choosing settings without the held-out splits)",
    "test": f"{len(split_tasks('test'))} fixed tasks: held-out shapes {list(HELD_OUT_SHAPES)}"
    f" or masses in {list(HELD_OUT_MASS)} kg",
    "hard": f"{len(split_tasks('hard'))} fixed tasks: mass {list(HARD_MASS)} kg, friction "
    f"{list(HARD_FRICTION)} or crush limit {list(HARD_CRUSH)} x the grip lifting needs",
}


def _family_layout(entry_point: str) -> tuple[int, int, dict[str, str]]:
    """Observation size, action size and split notes of a family's env module.

    Read from the module's ``OBS_NAMES``/``ACTION_NAMES`` (and ``SPLIT_NOTES`` if it has
    its own), so listing families builds no env.
    """
    module = importlib.import_module(entry_point.split(":")[0])
    notes = getattr(module, "SPLIT_NOTES", SPLIT_NOTES)
    return len(module.OBS_NAMES), len(module.ACTION_NAMES), notes


def run_envs(args: argparse.Namespace) -> int:
    """``metagrasp envs``: list task families, ids, spaces and splits."""
    rows = []
    for fam in FAMILIES.values():
        obs_dim, act_dim, notes = _family_layout(fam.entry_point)
        rows.append(
            {
                "name": fam.name,
                "env_id": fam.env_id,
                "description": fam.description,
                "obs_dim": obs_dim,
                "action_dim": act_dim,
                "splits": {s: notes.get(s, "") for s in fam.splits},
            }
        )
    if args.show_tasks:
        split = check_split(args.show_tasks)
        tasks = [t.to_dict() for t in split_tasks(split)]
    if args.json:
        out = {"families": rows}
        if args.show_tasks:
            out["tasks"] = {args.show_tasks: tasks}
        print(json.dumps(out, indent=2))
        return 0
    for r in rows:
        print(f"{r['name']:<17} {r['env_id']:<28} obs {r['obs_dim']:<3} act {r['action_dim']}")
        print(f"{'':<17} {r['description']}")
    # Families sharing split definitions (the grasp ones) are listed together.
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for r in rows:
        groups.setdefault(tuple(r["splits"].items()), []).append(r["name"])
    for splits, names in groups.items():
        print(f"\nsplits of {', '.join(names)}:")
        for s, note in splits:
            print(f"  {s:<6} {note}")
    if args.show_tasks:
        print(f"\n{args.show_tasks} tasks of the grasp families:")
        print(
            f"  {'id':<9} {'shape':<10} {'mass kg':>8} {'friction':>8} {'crush N':>8} "
            f"{'gain':>5} {'lat':>3}"
        )
        for t in tasks:
            print(
                f"  {t['task_id']:<9} {t['shape']:<10} {t['mass']:8.3f} {t['friction']:8.2f}"
                f" {t['crush_limit']:8.1f} {t['actuator_gain']:5.2f} {t['latency']:3d}"
            )
    return 0


def run_rollout(args: argparse.Namespace) -> int:
    """``metagrasp rollout``: run episodes, print outcomes, write a video of the first."""
    from metagrasp.sim.registry import make_env
    from metagrasp.sim.scripted import run_episode

    fam = get_family(args.task)
    if not fam.entry_point.endswith(":GraspEnv"):
        raise ConfigError(
            f"rollout renders the arm scene; {fam.name!r} is not a grasp family "
            "(use --task reach, grasp-lift or place)"
        )
    if args.episodes < 1:
        raise ConfigError("--episodes must be at least 1")
    video = args.video or ""
    ext = os.path.splitext(video)[1].lower()
    if video and ext not in (".mp4", ".gif", ".png"):
        raise ConfigError(f"--video {video!r}: use a .mp4, .gif or .png file name")
    env = make_env(
        fam.name,
        split=args.split,
        render_mode="rgb_array" if video else None,
        width=args.size,
        height=int(args.size * 3 / 4),
    )
    try:
        rng = np.random.default_rng(args.seed)
        successes = []
        for ep in range(args.episodes):
            frames: list | None = [] if (video and ep == 0) else None
            if args.policy == "random":

                def policy(obs: np.ndarray) -> np.ndarray:
                    return rng.uniform(-1, 1, 6).astype(np.float32)
            else:
                policy = None
            res = run_episode(env, policy, seed=args.seed + ep, frames=frames)
            successes.append(res["success"])
            t = res["task"]
            terms = ", ".join(f"{k} {v:.1f}" for k, v in res["reward_terms"].items() if v)
            print(
                f"episode {ep}: {t['shape']} mass {t['mass']:.3f} kg friction "
                f"{t['friction']:.2f} crush {t['crush_limit']:.1f} N | return "
                f"{res['return']:.1f} success {res['success']} crushed {res['crushed']} "
                f"peak grip {res['peak_grip_force']:.1f} N | {terms}"
            )
            if frames:
                _write_video(video, frames, fps=env.metadata["render_fps"])
                print(f"wrote {video} ({len(frames)} frames)")
        print(f"success rate {np.mean(successes):.2f} over {args.episodes} episode(s)")
    finally:
        env.close()
    return 0


def _write_video(path: str, frames: list, fps: int) -> None:
    import imageio.v2 as imageio

    ext = os.path.splitext(path)[1].lower()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if ext == ".png":
        imageio.imwrite(path, frames[-1])
    elif ext == ".gif":
        imageio.mimsave(path, frames, duration=1000 / fps, loop=0)
    else:
        try:
            imageio.mimsave(path, frames, fps=fps, macro_block_size=8)
        except (ValueError, ImportError) as exc:
            raise ConfigError(
                f"cannot write {path}: MP4 needs the imageio-ffmpeg package "
                f"(pip install imageio-ffmpeg), or pass a .gif name ({exc})"
            ) from None


def run_sim_bench(args: argparse.Namespace) -> int:
    """``metagrasp sim-bench``: throughput of raw MuJoCo, the env and the vector env."""
    from metagrasp.sim.bench import main_sim_bench

    get_family(args.task)
    return main_sim_bench(args)
