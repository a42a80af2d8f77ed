"""Does the robot's slower wrist roll cost grasps? The shipped bundle in sim, wrist
roll rate-limited.

On the robot the wrist roll cannot follow the policy's ``finger_yaw`` action as fast as
in the sim: the safety shield caps the command's speed (``max_velocity`` in the robot
file, 6 rad/s in the shipped virtual arms), and the servos themselves turn at most about
4.7 rad/s without load (Feetech STS3215: 0.22 s/60 deg at 12 V; Dynamixel XM430-W350:
46 rev/min at 12 V). The sim has neither limit: ``finger_yaw`` is an absolute angle, and
the wrist joint follows a jump of it at the position actuator's own speed.

This runs ``benchmarks/calibration.py``'s sim protocol (the bundle's deterministic
action, its own adaptation on the sim's flags, k = 0..K) once per wrist-roll rate, with
the ``finger_yaw`` action's target moving at most ``rate x period`` per step from the
previous (limited) one: what the shield does, and, at the servo's speed, what the servo
would do to a jump. It also measures the sim's own peak wrist speed on a 180-degree flip.

Usage::

    python benchmarks/wrist_rate.py --splits test hard --rates none 6 4.7 \\
        --json docs/benchmarks/wrist-rate.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from calibration import KS, _sim_run, _tasks
from provenance import stamp

from metagrasp.actions import OBS_NAMES

BUNDLE = "assets/pretrained/sac-grip-grasp-lift/policy.onnx"
_YAW_SCALE = math.pi / 2  # finger_yaw action +-1 = +-90 degrees of wrist roll


class WristRateLimit(gym.ActionWrapper):
    """Moves the ``finger_yaw`` action at most ``rate`` rad/s from its previous value.

    Counts the steps it changed (``limited``) out of all (``steps``) and the largest
    distance it held the command from the policy's (``max_lag_rad``), over its lifetime.
    """

    def __init__(self, env: gym.Env, rate: float) -> None:
        super().__init__(env)
        base = env.unwrapped
        self._i = base.action_names.index("finger_yaw")
        self._move = rate / base.config.control_hz / _YAW_SCALE
        self._cmd: float | None = None
        self.steps = self.limited = 0
        self.max_lag_rad = 0.0

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(**kwargs)
        # The shield starts each episode from the joint's present position.
        self._cmd = float(obs[OBS_NAMES.index("q_wrist_roll")]) / _YAW_SCALE
        return obs, info

    def action(self, action: np.ndarray) -> np.ndarray:
        action = np.array(action, np.float32)
        want = float(action[self._i])
        cmd = self._cmd + float(np.clip(want - self._cmd, -self._move, self._move))
        self.steps += 1
        if cmd != want:
            self.limited += 1
            self.max_lag_rad = max(self.max_lag_rad, abs(want - cmd) * _YAW_SCALE)
        self._cmd = cmd
        action[self._i] = cmd
        return action


def sim_flip_speed() -> dict[str, float]:
    """Peak wrist-roll speed (rad/s) in the sim on a -90 -> +90 degree finger_yaw jump."""
    from metagrasp.sim.grasp_env import EnvConfig, GraspEnv

    env = GraspEnv(config=EnvConfig(task="grasp-lift"))
    obs, _ = env.reset(seed=0)
    i = OBS_NAMES.index("q_wrist_roll")
    a = np.zeros(env.action_space.shape, np.float32)
    a[env.action_names.index("gripper")] = -1.0
    yaw = env.action_names.index("finger_yaw")
    q = []
    for t in range(40):
        a[yaw] = -1.0 if t < 15 else 1.0
        obs, *_ = env.step(a)
        q.append(float(obs[i]))
    env.close()
    dq = np.abs(np.diff(q[14:]))
    settle = next(t for t, v in enumerate(q[14:]) if v > _YAW_SCALE - 0.05)
    return {
        "peak_rad_s": float(dq.max() * env.config.control_hz),
        "steps_to_within_0.05_rad": settle,
    }


def _measure(
    args: argparse.Namespace, tasks: list[Any], rate: float | None, ks: list[int]
) -> dict[str, Any]:
    """One table row: the sim protocol on every task and seed with the wrist at ``rate``."""
    t0 = time.monotonic()
    wrappers: list[WristRateLimit] = []

    def wrap(env: gym.Env) -> gym.Env:
        wrappers.append(WristRateLimit(env, rate))
        return wrappers[-1]

    runs = [
        _sim_run(args.bundle, t, args.k_max, s, wrap=wrap if rate is not None else None)
        for s in args.seeds
        for t in tasks
    ]
    n = len(runs)
    return {
        "success": {k: float(np.mean([r[k] for r in runs])) for k in ks},
        "success_ci95": {k: float(1.96 * np.std([r[k] for r in runs]) / math.sqrt(n)) for k in ks},
        "episodes_per_k": n,
        "limited_steps": sum(w.limited for w in wrappers),
        "steps": sum(w.steps for w in wrappers),
        "max_lag_rad": max((w.max_lag_rad for w in wrappers), default=0.0),
        "wall_s": round(time.monotonic() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default=BUNDLE, help="exported policy.onnx")
    p.add_argument("--splits", nargs="+", default=["test", "hard"])
    p.add_argument(
        "--rates", nargs="+", default=["none", "6", "4.7"], help="rad/s, or 'none' (the sim)"
    )
    p.add_argument("--tasks", type=int, default=48, help="objects per split")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--k-max", type=int, default=3)
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    rates = [None if r == "none" else float(r) for r in args.rates]
    if any(r is not None and r <= 0 for r in rates):
        raise SystemExit("--rates: each rate must be > 0 rad/s, or 'none'")
    out: dict[str, Any] = {
        "bundle": args.bundle,
        **stamp(),
        "sim_flip": sim_flip_speed(),
        "splits": {},
    }
    print(f"sim wrist flip: {out['sim_flip']}", flush=True)
    ks = [k for k in KS if k <= args.k_max]
    for split in args.splits:
        tasks = _tasks(split, args.tasks)
        out["splits"][split] = {}
        for rate in rates:
            cell = _measure(args, tasks, rate, ks)
            key = "none" if rate is None else f"{rate:g}"
            out["splits"][split][key] = cell
            print(json.dumps({split: {key: cell}}), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
