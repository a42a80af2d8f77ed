"""``metagrasp calibrate``: few-shot adaptation to a new object on the robot, on the device.

Contract of :func:`calibrate` (numpy + onnxruntime + the hardware layer; never torch or
mujoco):

1. optionally ``M`` evaluation episodes with the bundle's unadapted state (``before``);
2. ``K`` adaptation episodes in a row, episode ``k`` acted with the state adapted on
   episodes ``0..k-1`` (the meta-test protocol of ``metagrasp eval``), each judged by
   :class:`~metagrasp.adapt.reward.DeviceReward` (or by the operator with ``ask``);
   the bundle's own adaptation runs between episodes (``bundle.adapt``: the exported
   inner loop of the MAML family, a context encoder, RMA's reward-free latent) or, for
   recurrent bundles without an adapt graph (RL²), the hidden state at the episode's end
   is carried into the next;
3. the adapted state goes into a calibration file (atomic; bundle hash, episode files
   and their hashes, time, settings: :mod:`metagrasp.adapt.calibration_file`);
4. optionally ``M`` evaluation episodes with the adapted state (``after``), and a table of
   success, return and peak grip force with 95 % confidence intervals.

Episodes run through :class:`~metagrasp.hardware.deploy.RobotSession` (the same safety
shield, recording and exit paths as ``deploy``), each tagged in the recording's index
with ``calibration: {object, bundle, phase, k}``. The device's judgement (and the
operator's answer, and a simulator's when one is attached) is appended to
``labels.jsonl`` in the recording directory. An interrupted calibration leaves its
finished episodes on disk; running the same command again resumes after them (episodes
whose status is not ``ok`` are run again), replaying adaptation over the recorded ones.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from metagrasp.adapt.calibration_file import Calibration, file_sha256, save_calibration
from metagrasp.adapt.reward import DeviceReward, RewardConfig
from metagrasp.errors import ConfigError

__all__ = [
    "CalibrateConfig",
    "CalibrationPolicy",
    "CalibrationReport",
    "Judge",
    "calibrate",
    "format_table",
    "summarise_phase",
]

PHASES = ("before", "adapt", "after")
"""Episode phases of a calibration, in the order they run."""


class Judge(Protocol):
    """A second opinion on each episode (the virtual robot's simulator); optional."""

    def restart_judging(self) -> None: ...

    def sim_outcome(self) -> dict[str, Any]: ...


@dataclass
class CalibrateConfig:
    """Settings of one calibration."""

    object_name: str
    """Name of the object (recorded; also names the default files)."""
    episodes: int = 3
    """K: adaptation episodes."""
    eval_episodes: int = 0
    """M: evaluation episodes before and after adapting (0: none)."""
    out: str = ""
    """Calibration file to write; default ``calibrations/<object>.json``."""
    record_dir: str = ""
    """Recording directory; default ``<out without .json>.episodes``."""
    ask: bool = False
    """Ask the operator after each episode whether it succeeded (and to reset the object);
    the answer replaces the device's success judgement."""
    deterministic_eval: bool = False
    """Evaluation episodes act with the policy's mean; default: like adaptation episodes
    (Gaussian exploration where the bundle has it), as ``metagrasp eval`` does."""
    seed: int = 0
    """Seed of the exploration noise (episode ``i`` uses ``seed * 1000 + i``)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """How the device judges episodes."""

    def __post_init__(self) -> None:
        if not self.object_name or any(c in self.object_name for c in "/\\\0"):
            raise ConfigError(f"object name {self.object_name!r} must be non-empty, without /")
        if self.episodes < 1:
            raise ConfigError(f"--episodes must be >= 1, got {self.episodes}")
        if self.eval_episodes < 0:
            raise ConfigError(f"--eval-episodes must be >= 0, got {self.eval_episodes}")
        if not self.out:
            self.out = str(Path("calibrations") / f"{self.object_name}.json")
        if not self.record_dir:
            self.record_dir = str(Path(self.out).with_suffix("")) + ".episodes"


class CalibrationPolicy:
    """The bundle as a control-loop policy, with what calibration needs around ``act``.

    * ``explore``: Gaussian exploration (the raw draw is returned and recorded);
    * per-step ``bundle.observe(state, reward, done)`` with the device reward, for
      recurrent bundles that take the previous reward (RL²): a no-op for others;
    * tells the judge (if any) an episode starts;
    * ``task``: a privileged task vector for oracle bundles (benchmarks only).
    """

    def __init__(
        self,
        bundle: Any,
        reward: DeviceReward,
        *,
        seed: int = 0,
        judge: Judge | None = None,
        task: np.ndarray | None = None,
    ) -> None:
        from metagrasp.hardware.policies import BundlePolicy

        self.inner = BundlePolicy(bundle, seed=seed)
        self.bundle = bundle
        self.spec = self.inner.spec
        self.reward = reward
        self.judge = judge
        self.task = task
        self.can_explore = bundle.metadata.get("exploration") == "gaussian"
        self.explore = False
        self._observes = bool(
            {"prev_reward", "prev_done"} & set((bundle.init_state() or {}).keys())
        )
        self._rng = np.random.default_rng(seed)
        self._prev: tuple[np.ndarray, np.ndarray] | None = None
        self._z0 = 0.0
        self._crushed = False

    @property
    def state(self) -> Any:
        """The bundle state right now (at an episode's end: the carried hidden state)."""
        return self.inner.state

    def set_task_state(self, state: Any) -> None:
        """Use this (adapted) state from the next episode on."""
        self.inner.set_task_state(state)

    def seed(self, seed: int) -> None:
        """Reseed the exploration noise (per episode, so a resumed run draws the same)."""
        self._rng = np.random.default_rng(seed)

    def reset(self) -> None:
        self.inner.reset()
        self._prev = None
        self._crushed = False
        if self.judge is not None:
            self.judge.restart_judging()

    def end_episode(self, outcome: Any) -> Any:
        """The state to carry into the next episode: the last step's reward observed with
        ``done = 1`` (as recurrent bundles were trained: every episode ends with a done)."""
        last = max(int(outcome.mask.sum()) - 1, 0)
        return self.bundle.observe(self.inner.state, float(outcome.rewards[last]), 1.0)

    def replay(self, observations: np.ndarray) -> None:
        """Run the state through a recorded episode's observations (resuming a recurrent
        bundle's calibration: its state is a function of what it observed)."""
        self.reset()
        for obs in observations:
            explore, self.explore = self.explore, False
            try:
                self.act(obs)
            finally:
                self.explore = explore

    def act(self, obs: np.ndarray) -> np.ndarray:
        b, inner = self.bundle, self.inner
        if self._prev is None:
            self._z0 = float(obs[25])
        elif self._observes:
            r, self._crushed = self.reward.step(
                self._prev[0], self._prev[1], obs, self._z0, self._crushed
            )
            inner.state = b.observe(inner.state, r, 0.0)
        if self.explore and self.can_explore:
            _, sample, inner.state = b.explore(obs, inner.state, self._rng, task=self.task)
            a = np.asarray(sample, np.float32).reshape(-1)
        else:
            action, inner.state = b.act(obs, inner.state, task=self.task)
            a = np.asarray(action, np.float32).reshape(-1)
        self._prev = (np.asarray(obs, np.float32).copy(), a)
        return a


@dataclass
class CalibrationReport:
    """What a calibration did."""

    file: str
    """The calibration file written."""
    record_dir: str
    """Where the episodes are."""
    episodes: list[dict[str, Any]]
    """Per episode: phase, k, file, status, device judgement, operator/sim if any."""
    summary: dict[str, Any]
    """Per phase: mean and CI95 of success, return, grip peak (and the sim's)."""
    adapt_seconds: float
    """Wall time of the final adaptation (s)."""
    adapt_cpu_seconds: float
    """CPU time of the final adaptation in its thread (s)."""
    resumed: int
    """Episodes reused from an earlier, interrupted run."""


def _ci(values: list[float]) -> tuple[float, float]:
    x = np.asarray(values, float)
    if x.size == 0:
        return math.nan, math.nan
    if x.size < 2:
        return float(x.mean()), math.nan
    return float(x.mean()), float(1.96 * x.std(ddof=1) / math.sqrt(x.size))


def summarise_phase(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and 95 % CI of success, return, grip peak (and sim success/return if judged)."""
    out: dict[str, Any] = {"n": len(episodes)}
    for key in ("success", "return", "grip_peak_n"):
        out[key], out[key + "_ci95"] = _ci([float(e["device"][key]) for e in episodes])
    sims = [e["sim"] for e in episodes if e.get("sim")]
    if sims and len(sims) == len(episodes):
        for key in ("success", "return", "grip_peak_n"):
            out["sim_" + key], out["sim_" + key + "_ci95"] = _ci([float(s[key]) for s in sims])
    return out


def format_table(summary: dict[str, dict[str, Any]]) -> str:
    """The before/after table (one row per phase that has episodes)."""

    def cell(row: dict[str, Any], key: str, fmt: str) -> str:
        m, c = row.get(key, math.nan), row.get(key + "_ci95", math.nan)
        if m is None or (isinstance(m, float) and math.isnan(m)):
            return "-"
        return f"{m:{fmt}}" + ("" if c is None or math.isnan(c) else f" +- {c:{fmt}}")

    sim = any("sim_success" in r for r in summary.values())
    head = f"{'':14s}{'n':>3s}  {'success':>14s}  {'return':>16s}  {'grip peak (N)':>14s}"
    if sim:
        head += f"  {'sim success':>14s}  {'sim return':>16s}"
    lines = [head]
    for name, row in summary.items():
        if not row.get("n"):
            continue
        line = (
            f"{name:14s}{row['n']:3d}  {cell(row, 'success', '.2f'):>14s}  "
            f"{cell(row, 'return', '.1f'):>16s}  {cell(row, 'grip_peak_n', '.1f'):>14s}"
        )
        if sim:
            line += (
                f"  {cell(row, 'sim_success', '.2f'):>14s}  {cell(row, 'sim_return', '.1f'):>16s}"
            )
        lines.append(line)
    return "\n".join(lines)


def _read_labels(record_dir: Path) -> dict[str, dict[str, Any]]:
    path = record_dir / "labels.jsonl"
    out: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a crash: that episode is judged again from its data
        out[rec["file"]] = rec
    return out


def _append_label(record_dir: Path, rec: dict[str, Any]) -> None:
    with open(record_dir / "labels.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _previous(record_dir: Path, sha: str, obj: str) -> dict[str, list[dict[str, Any]]]:
    """Finished episodes of an earlier run of this calibration, per phase, in order."""
    from metagrasp.hardware.recorder import load_recording

    done: dict[str, list[dict[str, Any]]] = {p: [] for p in PHASES}
    if not (record_dir / "episodes.jsonl").exists():
        return done
    for ep in load_recording(record_dir)["episodes"]:
        tag = ep.get("calibration") or {}
        if tag.get("bundle") != sha or tag.get("object") != obj or ep.get("status") != "ok":
            continue
        if tag.get("phase") in done:
            done[tag["phase"]].append(ep)
    return done


def calibrate(
    bundle_path: str,
    robot_file: Any,
    port: str,
    config: CalibrateConfig,
    *,
    pose_source: Any = "fixed:0.18,0,0.02",
    loop: Any = None,
    judge: Judge | None = None,
    task: np.ndarray | None = None,
    ask: Callable[[str], str] = input,
    log: Callable[[str], None] = print,
) -> CalibrationReport:
    """Run a calibration (see the module docstring); returns its report.

    Args:
        bundle_path: Exported policy file (``policy.onnx``).
        robot_file: Robot file path or parsed config.
        port: Serial device of the servo bus.
        config: What to do.
        pose_source: Object-pose source or its spec.
        loop: :class:`~metagrasp.hardware.control_loop.LoopConfig`; default: the bundle's
            control rate and episode length.
        judge: Optional second opinion per episode (the virtual robot's simulator).
        task: Privileged task vector, for oracle bundles (benchmarks).
        ask: Reads the operator's answer to a prompt (``config.ask``).
        log: Where progress lines go.

    Raises:
        BundleError, ConfigError, RobotError...: after the robot was made safe; every
            finished episode is on disk and a rerun resumes after it.
    """
    from metagrasp.adapt.runtime import load_bundle
    from metagrasp.hardware.control_loop import LoopConfig
    from metagrasp.hardware.deploy import RobotSession

    bundle = load_bundle(bundle_path)
    meta = bundle.metadata
    sha = meta["sha256"]
    reward = DeviceReward(config.reward)
    policy = CalibrationPolicy(bundle, reward, seed=config.seed, judge=judge, task=task)
    if loop is None:
        loop = LoopConfig(rate_hz=policy.spec.control_hz, episode_steps=bundle.episode_length)
    if loop.episode_steps > bundle.episode_length:
        raise ConfigError(
            f"episodes of {loop.episode_steps} steps exceed the bundle's "
            f"{bundle.episode_length}: adaptation takes at most that many"
        )
    rec = Path(config.record_dir)
    rec.mkdir(parents=True, exist_ok=True)
    labels = _read_labels(rec)
    previous = _previous(rec, sha, config.object_name)
    if config.ask:
        previous = {
            p: [e for e in eps if "operator" in labels.get(Path(e["file"]).name, {})]
            for p, eps in previous.items()
        }
    carry = not bundle.adapts and bool(bundle.init_state())
    log(
        f"calibrating {meta.get('algorithm')} bundle {sha[:12]} on {config.object_name!r}: "
        f"{config.episodes} adaptation episode(s)"
        + (
            f", {config.eval_episodes} evaluation episode(s) before and after"
            if config.eval_episodes
            else ""
        )
        + (" (reward-free adaptation)" if bundle.reward_free and bundle.adapts else "")
    )
    needs_crush = bundle.needs_crush_judgement
    sees_crush = config.reward.max_grip_n is not None or config.reward.detect_collapse
    if needs_crush and not config.ask and not sees_crush:
        raise ConfigError(
            f"the {meta.get('algorithm')} bundle searches the grip from whether each "
            "episode crushed the object, which the device cannot see by default: pass --ask "
            "(the operator answers after each episode), --max-grip N (the force per pad the "
            "object tolerates) or --detect-crush (the object gives way when crushed)"
        )
    if policy._observes and config.reward.uses_collapse:
        raise ConfigError(
            "--detect-crush judges whole episodes, but this bundle observes a reward every "
            "step; use --max-grip N or --ask for it"
        )
    if not sees_crush and not needs_crush:
        # Blind to crushing, the device pays a crushed object's grasp like any other.
        log(
            "  no --max-grip or --detect-crush: the device cannot see if the object is "
            "crushed; for a fragile object give the grip force per pad (N) it tolerates, or "
            "--detect-crush if it gives way when crushed"
        )
    wanted = {
        "before": config.eval_episodes,
        "adapt": config.episodes,
        "after": config.eval_episodes,
    }
    reused = {p: _in_order(previous[p], p, config.episodes)[: wanted[p]] for p in PHASES}
    n_resumed = sum(len(v) for v in reused.values())
    if n_resumed:
        log(f"resuming: {n_resumed} finished episode(s) found in {rec}")

    episodes: list[dict[str, Any]] = []
    adapt_set: list[dict[str, np.ndarray]] = []
    timing = {"wall": 0.0, "cpu": 0.0}
    init = bundle.init_state()
    state = init

    def judged(ep: dict[str, Any], phase: str, k: int) -> dict[str, Any]:
        d = ep["data"]
        out = reward.episode(d["obs"], d["action"], d["next_obs"])
        name = Path(ep["file"]).name
        label = labels.get(name, {})
        row = {
            "phase": phase,
            "k": k,
            "file": str(rec / name),
            "status": ep.get("status", "ok"),
            "device": out.summary(),
            **{key: label[key] for key in ("operator", "sim") if key in label},
        }
        if "operator" in label:
            row["device"]["success"] = bool(label["operator"])
        if "operator_crushed" in label:
            row["device"]["crushed"] = bool(label["operator_crushed"])
        return row | {"_outcome": out, "_data": d}

    def adapt_now(history: list[dict[str, np.ndarray]], current: Any) -> Any:
        t0, c0 = time.perf_counter(), time.thread_time()
        new = bundle.adapt(current, history)
        timing["wall"], timing["cpu"] = time.perf_counter() - t0, time.thread_time() - c0
        return new

    def as_batch(row: dict[str, Any]) -> dict[str, np.ndarray]:
        d, out, dev = row["_data"], row["_outcome"], row["device"]
        return {
            "obs": d["obs"],
            "actions": d["action"],
            "rewards": out.rewards,
            "next_obs": d["next_obs"],
            "dones": out.dones,
            "mask": out.mask,
            # The grip search's outcome flags: a crushed object never counts as lifted
            # (an operator may call a crushed lift a success; the sim does not).
            "lifted": bool(dev["success"]) and not dev["crushed"],
            "crushed": bool(dev["crushed"]),
            "gripped": dev["grip_peak_n"] > 0,
            # keep_raised: the grip carried the object to the lift height at some step.
            "raised": dev["max_height_m"] >= config.reward.lift_height,
        }

    def run_one(session: Any, phase: str, k: int, index: int) -> dict[str, Any]:
        policy.seed(config.seed * 1000 + index)
        tag = {"object": config.object_name, "bundle": sha, "phase": phase, "k": k}
        result = session.run_episode({"calibration": tag})
        ep = {**result.meta, "data": result.data}
        sim = judge.sim_outcome() if judge is not None else None
        label: dict[str, Any] = {"file": Path(result.meta.get("file", f"ep{index}")).name}
        if sim is not None:
            label["sim"] = sim
        if config.ask:
            # Asked before the label is stored: an episode whose answer never got stored
            # (interrupted at the prompt) is run again on resume.
            q = f"{phase} episode (k={k}): did the grasp succeed?"
            label["operator"] = session.hold_during(lambda: _ask_yes_no(ask, q))
            if needs_crush:
                q = f"{phase} episode (k={k}): was the object crushed or damaged?"
                label["operator_crushed"] = session.hold_during(lambda: _ask_yes_no(ask, q))
        if "file" in result.meta:
            _append_label(rec, label)
        labels[label["file"]] = label
        if config.ask:
            session.hold_during(lambda: ask("Put the object back, then press Enter: "), park=True)
        row = judged(ep, phase, k)
        d = row["device"]
        extra = ", crushed" if d["crushed"] else ""
        extra += f", sim success {int(sim['success'])}" if sim else ""
        log(
            f"  {phase} k={k}: success {int(d['success'])}, return {d['return']:.1f}, "
            f"grip peak {d['grip_peak_n']:.1f} N{extra}"
        )
        return row

    def play(session: Any | None, phase: str, count: int, explore: bool, first: int) -> int:
        nonlocal state
        index = first
        for i in range(count):
            k = i if phase == "adapt" else (0 if phase == "before" else config.episodes)
            if phase == "adapt" and i > 0:
                if carry:
                    state = adapt_cache["carry"]
                else:
                    state = _between(session, functools.partial(adapt_now, adapt_set, state))
            policy.set_task_state(state)
            policy.explore = explore
            if i < len(reused[phase]):
                row = judged(reused[phase][i], phase, k)
                if carry:
                    policy.replay(row["_data"]["obs"])
            else:
                row = run_one(session, phase, k, index)
            if phase == "adapt":
                adapt_set.append(as_batch(row))
                adapt_cache["carry"] = policy.end_episode(row["_outcome"])
            episodes.append(row)
            index += 1
        return index

    adapt_cache: dict[str, Any] = {}
    eval_explore = not config.deterministic_eval
    need_robot = any(len(reused[p]) < wanted[p] for p in PHASES)
    from contextlib import nullcontext

    ctx = (
        RobotSession(
            policy,
            robot_file,
            port,
            pose_source=pose_source,
            loop=loop,
            record_dir=str(rec),
            log=log,
        )
        if need_robot
        else nullcontext(None)
    )
    with ctx as session:
        index = play(session, "before", wanted["before"], eval_explore, 0)
        index = play(session, "adapt", wanted["adapt"], True, index)
        if carry:
            state = adapt_cache["carry"]
        else:
            state = _between(session, lambda: adapt_now(adapt_set, state))
        cal = Calibration(
            object=config.object_name,
            bundle={
                "file": str(Path(bundle_path).resolve()),
                "sha256": sha,
                "algorithm": meta.get("algorithm"),
                "run_id": meta.get("run_id"),
                "config_hash": meta.get("config_hash"),
            },
            state=state or {},
            episodes=[_public(r) for r in episodes if r["phase"] == "adapt"],
            settings={
                "episodes": config.episodes,
                "eval_episodes": config.eval_episodes,
                "seed": config.seed,
                "ask": config.ask,
                "adaptation": bundle.adaptation.get("kind", "none") if not carry else "carry",
                "reward_free": bool(bundle.reward_free),
                "reward": asdict(config.reward),
                "loop": {"rate_hz": loop.rate_hz, "episode_steps": loop.episode_steps},
                "port": port,
                "robot": robot_file if isinstance(robot_file, str) else robot_file.name,
            },
            results={"adapt_seconds": timing["wall"], "adapt_cpu_seconds": timing["cpu"]},
        )
        for row in cal.episodes:
            row["sha256"] = file_sha256(row["file"])
        save_calibration(cal, config.out)
        grip = ""
        if state and "grip" in state:  # the grip search's result (sac-grip bundles)
            grip = f", grip {float(state['grip'].flat[0]):.2f} N per pad"
        log(f"calibration saved: {config.out} (adaptation {timing['wall'] * 1e3:.0f} ms{grip})")
        play(session, "after", wanted["after"], eval_explore, index)
    summary = {
        "before": summarise_phase([e for e in episodes if e["phase"] == "before"]),
        "adaptation": summarise_phase([e for e in episodes if e["phase"] == "adapt"]),
        "after": summarise_phase([e for e in episodes if e["phase"] == "after"]),
    }
    cal.results = {**cal.results, "summary": summary}
    save_calibration(cal, config.out)
    return CalibrationReport(
        file=config.out,
        record_dir=str(rec),
        episodes=[_public(r) for r in episodes],
        summary=summary,
        adapt_seconds=timing["wall"],
        adapt_cpu_seconds=timing["cpu"],
        resumed=n_resumed,
    )


def _in_order(eps: list[dict[str, Any]], phase: str, k_max: int) -> list[dict[str, Any]]:
    """The reusable prefix: adaptation episodes k = 0, 1, ... in a row; evaluation
    episodes after exactly ``k_max`` adaptation episodes (a rerun with another K)."""
    if phase == "adapt":
        out = []
        for e in eps:
            if e["calibration"].get("k") != len(out):
                break
            out.append(e)
        return out
    if phase == "after":
        return [e for e in eps if e["calibration"].get("k") == k_max]
    return eps


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def _between(session: Any | None, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` while the robot holds still (directly when no robot is needed)."""
    return fn() if session is None else session.hold_during(fn)


def _ask_yes_no(ask: Callable[[str], str], question: str) -> bool:
    while True:
        answer = ask(f"{question} [y/n] ").strip().lower()
        if answer in ("y", "yes", "1"):
            return True
        if answer in ("n", "no", "0"):
            return False
