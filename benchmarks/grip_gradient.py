"""A policy-gradient inner loop on the grip: CAVIA's kind of adaptation, given its best case.

CAVIA (``policies/cavia.py``) adapts a context vector with one policy-gradient step on the
episodes of the new task. Trained end to end on grasp-lift, its PPO outer loop never
learned a squeeze that lifts fragile objects, so its inner loop had no fragile grasp to
adapt towards (closure -1.18, docs/BENCHMARKS.md). This benchmark asks whether the inner
loop itself could close the gap if the outer loop had done its part. It takes the
sac-grip network, whose squeeze is the commanded grip and which lifts fragile objects at
the right one (its oracle line), and makes the context one number, the log of that grip:

* each episode draws its grip from ``log g ~ N(c, sigma^2)`` (the exploration the policy
  gradient needs), and acts with the network at that grip;
* after each episode ``c`` takes one REINFORCE step on that episode's return ``R``::

      c <- c + alpha * (R - b) / RETURN_SCALE * eps,    eps = (log g - c) / sigma

  (the gradient of ``(R - b) log N(log g; c, sigma^2)`` with respect to ``c`` is
  ``(R - b) eps / sigma``; ``1 / sigma`` is folded into ``alpha``);
* ``c`` starts at the best single grip (``start_grip_n``, the DR line's).

``sigma``, ``alpha`` and the baseline ``b`` are what a MAML/CAVIA outer loop would
meta-learn. Here a grid chooses them on ``val``, which finds at least as good a setting of
three numbers as an outer loop would. The grid runs on measured outcome tables (``table``:
every ``val`` object, 16 grips on a log grid, 8 episodes each): an episode at grip ``g`` is
drawn from the table's episodes at the grid grip nearest ``g``. The same tables emulate the
grip search (``next_grip``, its default settings) as a check of the emulation against
that search's measured ``val`` figure. ``eval`` then runs the chosen settings through the
meta-test protocol itself (real episodes, ``test`` and ``hard``) and writes a
``results.json`` that ``reference_lines.py`` reads.

    python benchmarks/grip_gradient.py table RUN [RUN...] --split val --out tables/
    python benchmarks/grip_gradient.py choose tables/*.json.gz --json choice.json
    python benchmarks/grip_gradient.py eval RUN [RUN...] --sigma S --alpha A --baseline B \\
        --splits test hard --eval-seeds 0 1 --out DIR
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

RETURN_SCALE = 100.0
"""Returns are divided by this before the step (a grasp-lift episode returns 30-420)."""
GRID = np.clip(np.sort(np.r_[4.0 * np.exp(0.26 * np.arange(-8, 7)), 20.0]), 0.5, 20.0)
"""The outcome tables' grips (N per pad): log steps of 0.26 through the start grip, 4 N."""
DEVICE_FIELDS = ("device_lifted", "device_crushed", "device_raised")
"""The device's verdicts on each table episode (``outcome_bound.py --judge device``)."""
TABLE_FIELDS = ("success", "crushed", "returns", "raised", *DEVICE_FIELDS)
JUDGES = {"sim": ("success", "crushed", "raised"), "device": DEVICE_FIELDS}
"""Who reads each episode's (lifted, crushed, raised) for a search: the sim's flags (an
operator's answers) or the device's verdicts from the recorded observations."""
LOG_RANGE = (float(np.log(GRID[0])), float(np.log(GRID[-1])))
"""The log of the gripper's range (N per pad), where the grip and its mean ``c`` stay."""
SIGMAS, ALPHAS = (0.08, 0.13, 0.2, 0.35, 0.5), (0.03, 0.05, 0.1, 0.2, 0.4, 0.8)
BASELINES = (150, 250, 320, 370, 410, 450)
"""The settings ``choose`` tries (180 in all)."""


def draw_grip(c: np.ndarray | float, eps: np.ndarray | float, sigma: float) -> np.ndarray:
    """The grip (N) drawn at ``log g = c + sigma eps``, inside the gripper's range."""
    return np.exp(np.clip(c + sigma * eps, *LOG_RANGE))


def reinforce_step(c, eps, ret, alpha: float, baseline: float) -> np.ndarray:
    """``c`` after one REINFORCE step on an episode's return ``ret`` (module docstring)."""
    return np.clip(c + alpha * (ret - baseline) / RETURN_SCALE * eps, *LOG_RANGE)


class GradientGrip:
    """A trained sac-grip algorithm whose grip is adapted by the REINFORCE step above.

    It has the protocol's interface (``init_state``, ``act``, ``observe``, ``adapt``) and
    acts through the network's ``act_at`` (the commanded squeeze, the squeeze guard).
    """

    def __init__(self, algo: Any, sigma: float, alpha: float, baseline: float, seed: int = 0):
        if sigma <= 0 or alpha < 0:
            raise ValueError(f"sigma must be > 0 and alpha >= 0, got {sigma}, {alpha}")
        self.algo, self.sigma, self.alpha, self.baseline = algo, sigma, alpha, baseline
        self.rng = np.random.default_rng(seed)

    def _draw(self, c: np.ndarray) -> dict[str, np.ndarray]:
        eps = self.rng.normal(size=c.shape)
        return {"c": c, "eps": eps, "grip": draw_grip(c, eps, self.sigma)}

    def init_state(self, n: int) -> dict[str, np.ndarray]:
        return self._draw(np.full(n, np.log(self.algo.config.start_grip_n)))

    def act(self, obs, task, state, deterministic: bool = False):
        return self.algo.act_at(obs, state["grip"], deterministic), state

    def observe(self, state, step):
        return state

    def adapt(self, state, episodes):
        ret = episodes[-1].returns
        return self._draw(reinforce_step(state["c"], state["eps"], ret, self.alpha, self.baseline))


def load(run: str, algo_settings: dict[str, Any] | None = None):
    """The sac-grip run's algorithm with the squeeze guard on, as the protocol's lines act."""
    from metagrasp.policies.runner import load_trained

    settings = {"squeeze_guard": True, **(algo_settings or {})}
    algo, _, spec = load_trained(run, algo_overrides=settings)
    if algo.name != "sac-grip":
        raise SystemExit(f"{run} is a {algo.name} run; this benchmark needs sac-grip runs")
    return algo, spec


def table(run: str, split: str, seeds: tuple[int, ...], reps: int) -> dict[str, Any]:
    """Per grid grip and object: success, crush, return and raised flag of ``reps`` x
    ``len(seeds)`` episodes (the grip never adapts), and the device's verdicts on them."""
    from metagrasp.policies.evaluate import meta_test
    from metagrasp.policies.grip_search import device_verdicts, raised_flags

    out: dict[str, Any] = {"run": run, "split": split, "grips": GRID.tolist()}
    for key in TABLE_FIELDS:
        out[key] = []
    for g in GRID:
        algo, spec = load(run, {"act_with": "fixed", "start_grip_n": float(g)})
        rec: dict[str, list] = {key: [] for key in TABLE_FIELDS}

        def keep(k: int, ep: Any, rec: dict = rec) -> None:
            rec["success"].append(ep.success.copy())
            rec["crushed"].append(ep.crushed.copy())
            rec["returns"].append(np.round(ep.returns, 3))
            rec["raised"].append(raised_flags(ep))
            for key, flags in zip(DEVICE_FIELDS, device_verdicts(ep), strict=True):
                rec[key].append(flags)

        meta_test(algo, spec, split, reps - 1, seeds, episode_observer=keep)
        for key, rows in rec.items():  # (episodes, objects) -> objects x episodes
            out[key].append(np.array(rows).T.tolist())
        print(f"{run} {split} {g:5.2f} N: success {np.mean(rec['success']):.3f}", flush=True)
    return out


class Emulator:
    """Episodes drawn from outcome tables (several runs' objects side by side)."""

    def __init__(self, tables: list[dict[str, Any]], seed: int = 0):
        self.log_grid = np.log(np.asarray(tables[0]["grips"]))
        fields = [k for k in TABLE_FIELDS if all(k in t for t in tables)]
        cat = {k: np.concatenate([np.asarray(t[k], float) for t in tables], axis=1) for k in fields}
        self.cells, self.objects = cat, cat["success"].shape[1]
        self.rng = np.random.default_rng(seed)

    def episode(self, obj: int, grip: float) -> dict[str, float]:
        """One recorded episode of ``obj`` at the grid grip nearest ``grip``: every field."""
        i = int(np.argmin(np.abs(self.log_grid - np.log(grip))))
        j = self.rng.integers(self.cells["success"].shape[2])
        return {k: float(v[i, obj, j]) for k, v in self.cells.items()}

    def search(self, repeats: int, k_total: int = 4, judge: str = "sim") -> np.ndarray:
        """Success per k (the sim's flag) of the grip search with its default settings,
        reading each episode's outcome as ``judge`` (``sim`` or ``device``) does."""
        from metagrasp.grip_search import next_grip
        from metagrasp.policies.grip_search import GripSearchConfig

        read = JUDGES[judge]
        cfg, lo, hi = GripSearchConfig(), GRID[0], GRID[-1]
        kw = {"keep_raised": cfg.keep_raised, "raised_nudge": cfg.raised_nudge}
        wins = np.zeros(k_total)
        for obj, _ in itertools.product(range(self.objects), range(repeats)):
            grip, outcomes, raised = cfg.start_grip_n, [], []
            for k in range(k_total):
                ep = self.episode(obj, grip)
                lifted, crushed, up = (bool(ep[f]) for f in read)
                wins[k] += ep["success"]
                outcomes.append((grip, lifted, crushed))
                raised.append(up)
                grip = next_grip(outcomes, cfg.start_grip_n, lo, hi, raised=raised, **kw)
        return wins / (self.objects * repeats)

    def gradient(self, sigma: float, alpha: float, b: float, repeats: int, k_total: int = 4):
        """Success per k of :class:`GradientGrip`'s rule with these settings."""
        from metagrasp.policies.grip_search import GripSearchConfig

        wins = np.zeros(k_total)
        for obj, _ in itertools.product(range(self.objects), range(repeats)):
            c = np.log(GripSearchConfig().start_grip_n)
            for k in range(k_total):
                eps = self.rng.normal()
                ep = self.episode(obj, float(draw_grip(c, eps, sigma)))
                wins[k] += ep["success"]
                c = float(reinforce_step(c, eps, ep["returns"], alpha, b))
        return wins / (self.objects * repeats)


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """The protocol's episodes with :class:`GradientGrip`; meta_rl.py's results layout."""
    from metagrasp.policies.evaluate import meta_test, per_k_stats
    from metagrasp.sim.registry import family_split_tasks

    name = f"sac-grip:inner=gradient,sigma={args.sigma},alpha={args.alpha},b={args.baseline}"
    report: dict[str, Any] = {"task": "grasp-lift", "preset": "default", "splits": {}}
    for split in args.splits:
        succ, rets = [], []
        for run in args.runs:
            algo, spec = load(run)
            line = GradientGrip(algo, args.sigma, args.alpha, args.baseline, seed=args.seed)
            raw = meta_test(line, spec, split, 3, tuple(args.eval_seeds))
            succ.append(raw["success"])
            rets.append(raw["returns"])
        s, r = np.concatenate(succ), np.concatenate(rets)  # (runs x seeds, objects, k)
        fragile = np.array([t.fragile for t in family_split_tasks("grasp-lift", split)])
        per_class = {
            f"{cls}_k{k}": float(s[:, mask, k].mean())
            for cls, mask in (("fragile", fragile), ("robust", ~fragile))
            for k in (0, 3)
        }
        report["splits"][split] = {
            name: {
                "per_k": per_k_stats(s, r),
                "runs": [str(Path(x).resolve()) for x in args.runs],
                "success_by_class": per_class,
                "raw_success": s.astype(int).tolist(),
            }
        }
        ks = " / ".join(f"{row['success']:.3f}" for row in report["splits"][split][name]["per_k"])
        print(f"{split}: success k=0..3 {ks}; {per_class}", flush=True)
    return report


def _read(path: Path) -> dict[str, Any]:
    """A table written by ``table`` (gzip-compressed JSON), or the same uncompressed."""
    data = path.read_bytes()
    return json.loads(gzip.decompress(data) if path.suffix == ".gz" else data)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table", help="measure outcome tables of sac-grip runs")
    t.add_argument("runs", nargs="+")
    t.add_argument("--split", default="val")
    t.add_argument("--eval-seeds", type=int, nargs="+", default=[0, 1])
    t.add_argument("--episodes", type=int, default=4, help="episodes per object, grip and seed")
    t.add_argument("--out", type=Path, required=True, help="folder for one table per run")
    c = sub.add_parser("choose", help="emulate the search and the gradient settings on tables")
    c.add_argument("tables", type=Path, nargs="+")
    c.add_argument("--repeats", type=int, default=16, help="emulated sequences per object")
    c.add_argument("--json", type=Path, help="write every setting's success per k here")
    e = sub.add_parser("eval", help="the protocol's episodes with chosen settings")
    e.add_argument("runs", nargs="+")
    for flag in ("--sigma", "--alpha", "--baseline"):
        e.add_argument(flag, type=float, required=True)
    e.add_argument("--splits", nargs="+", default=["test", "hard"])
    e.add_argument("--eval-seeds", type=int, nargs="+", default=[0, 1])
    e.add_argument("--seed", type=int, default=0, help="seed of the grips' exploration draws")
    e.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    if args.cmd == "table":
        args.out.mkdir(parents=True, exist_ok=True)
        for run in args.runs:
            res = table(run, args.split, tuple(args.eval_seeds), args.episodes)
            path = args.out / f"{args.split}-{Path(run).name}.json.gz"
            path.write_bytes(gzip.compress(json.dumps(res).encode(), mtime=0))
    elif args.cmd == "choose":
        emu = Emulator([_read(f) for f in args.tables])
        search = emu.search(args.repeats)
        print("grip search (emulated): success k=0..3 " + " / ".join(f"{x:.3f}" for x in search))
        rows = []
        for sigma, alpha, b in itertools.product(SIGMAS, ALPHAS, BASELINES):
            wins = emu.gradient(sigma, alpha, b, args.repeats)
            rows.append({"sigma": sigma, "alpha": alpha, "baseline": b, "success": wins.tolist()})
        rows.sort(key=lambda r: -r["success"][3])
        for r in rows[:8]:
            cells = " / ".join(f"{x:.3f}" for x in r["success"])
            print(f"sigma {r['sigma']} alpha {r['alpha']} b {r['baseline']}: {cells}")
        if args.json:
            args.json.write_text(
                json.dumps({"search": search.tolist(), "gradient": rows}, indent=1)
            )
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        report = evaluate(args)
        (args.out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
