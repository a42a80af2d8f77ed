"""How far the device's judgement of an episode is from the simulator's.

On the robot, calibration rewards and success come from :class:`DeviceReward`, which sees
only recorded observations. This runs scripted grasps in the sim at several grip
levels (some crush fragile objects, some slip on heavy ones), judges each recorded episode
with the device's code, blind to the crush limit, with the limit known
(``metagrasp calibrate --max-grip``) and finding crushes from the object giving way
(``--detect-crush``), and compares with the sim's own reward, success and crush flags.

    python benchmarks/device_reward.py --split test --episodes 60 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from metagrasp.adapt.reward import DeviceReward, RewardConfig
from metagrasp.sim.registry import make_env
from metagrasp.sim.scripted import ScriptedGrasp, record_episode

GRIPS_N = (3.0, 8.0, 15.0)
"""Grip levels per pad of the scripted grasp, cycled over episodes."""


def measure(split: str, episodes: int) -> dict:
    """Per-episode sim and device judgements, summarised."""
    env = make_env("grasp-lift", split=split)
    base = env.unwrapped

    def scripted(grip: float) -> ScriptedGrasp:  # for the task the reset just drew
        return ScriptedGrasp(base.task, "grasp-lift", config=base.config, grip_force=grip)

    rows = []
    for i in range(episodes):
        grip = GRIPS_N[i % len(GRIPS_N)]
        ep, info = record_episode(env, lambda g=grip: scripted(g), seed=i)
        judges = {
            "blind": RewardConfig(),
            "known": RewardConfig(max_grip_n=base.task.crush_limit),
            "collapse": RewardConfig(detect_collapse=True),  # the object giving way
        }
        row = {
            "crushed": bool(info["crushed"]),
            "success": bool(info["success"]),
            "return": sum(ep["rewards"].tolist()),  # summed in step order, as the env does
        }
        for name, config in judges.items():
            out = DeviceReward(config).episode(ep["obs"], ep["actions"], ep["next_obs"])
            row[name] = {
                "success": out.success,
                "return": out.episode_return,
                "crushed": out.crushed,
            }
        rows.append(row)
    env.close()

    def summary(sel: list[dict], judge: str) -> dict:
        if not sel:
            return {"episodes": 0}
        gap = [r[judge]["return"] - r["return"] for r in sel]
        return {
            "episodes": len(sel),
            "success_sim": float(np.mean([r["success"] for r in sel])),
            "success_device": float(np.mean([r[judge]["success"] for r in sel])),
            "success_agreement": float(np.mean([r[judge]["success"] == r["success"] for r in sel])),
            "return_gap_mean": float(np.mean(gap)),
            "return_gap_p5_p95": [float(np.percentile(gap, 5)), float(np.percentile(gap, 95))],
        }

    def crushed_share(sel: list[dict], judge: str) -> float | None:
        return float(np.mean([r[judge]["crushed"] for r in sel])) if sel else None

    crushed = [r for r in rows if r["crushed"]]
    intact = [r for r in rows if not r["crushed"]]
    out: dict = {
        "split": split,
        "episodes": episodes,
        "grips_n": list(GRIPS_N),
        "crushed_fraction": len(crushed) / max(len(rows), 1),
    }
    for key, judge in (("blind", "blind"), ("known_limit", "known"), ("collapse", "collapse")):
        out[key] = {
            "all": summary(rows, judge),
            "crushed": summary(crushed, judge),
            "intact": summary(intact, judge),
        }
        if judge != "blind":  # the blind device never calls a crush
            agree = np.mean([r[judge]["crushed"] == r["crushed"] for r in rows])
            out[key]["crush_detected_agreement"] = float(agree)
    out["collapse"]["crushes_found"] = crushed_share(crushed, "collapse")
    out["collapse"]["false_crushes"] = crushed_share(intact, "collapse")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="test", choices=["train", "test", "hard"])
    ap.add_argument("--episodes", type=int, default=60)
    ap.add_argument("--json", default=None, help="write the result here")
    args = ap.parse_args()
    res = measure(args.split, args.episodes)
    print(f"{args.split}: {args.episodes} scripted episodes, {res['crushed_fraction']:.0%} crushed")
    print("judge        subset    n  success sim/dev  agree  return gap mean [p5, p95]")
    for judge in ("blind", "known_limit", "collapse"):
        for subset in ("all", "crushed", "intact"):
            s = res[judge][subset]
            if not s["episodes"]:
                continue
            lo, hi = s["return_gap_p5_p95"]
            print(
                f"{judge:12s} {subset:8s} {s['episodes']:3d}  "
                f"{s['success_sim']:.2f}/{s['success_device']:.2f}       "
                f"{s['success_agreement']:.2f}  {s['return_gap_mean']:+7.1f} [{lo:+.1f}, {hi:+.1f}]"
            )
    c = res["collapse"]
    print(
        f"--detect-crush: found {c['crushes_found']:.2f} of the crushes, false crush on "
        f"{c['false_crushes']:.2f} of the intact episodes "
        f"(agreement {c['crush_detected_agreement']:.2f})"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
