"""The one training runner: config resolution, env, logging, checkpoints, resume.

It serves every registered algorithm through the contract of
:mod:`metagrasp.policies.base` and never asks which algorithm it runs. A run directory
holds::

    config.json            the resolved config (run + algo + env spec + hash)
    metrics.csv            every logged metric, one row per logged iteration
    tb/                    TensorBoard event files of the same metrics
    checkpoints/last.pt    the latest checkpoint (atomic write; resumable)
    checkpoints/step_N.pt  kept copies every ``run.keep_every`` iterations (optional)

Ctrl-C writes a checkpoint before exiting, so ``--resume`` continues the run.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metagrasp.errors import CheckpointError, ConfigError, TrainingError
from metagrasp.policies import config as cfgs
from metagrasp.policies.base import EnvSpec, algorithm_class, preset_layers

CHECKPOINT_FORMAT = 1


def resolve_config(
    algo: str,
    task: str,
    preset: str = "default",
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Resolve preset < config file < command-line overrides into typed configs.

    Returns:
        ``{"run": dict, "algo": dict}`` after validation by the dataclasses.

    Raises:
        UnknownNameError: unknown algorithm, task family or preset.
        ConfigError: unknown or mistyped fields, out-of-range values.
    """
    from metagrasp.sim import get_family

    algo_cls = algorithm_class(algo)
    family = get_family(task).name
    layers = [preset_layers(algo_cls, family, preset)]
    if config_file:
        layers.append(cfgs.load_config_file(config_file))
    base = {"run": {"algo": algo, "task": family, "preset": preset}}
    merged = cfgs.merge(layers[0], *layers[1:], overrides or {}, base)
    run = cfgs.from_dict(cfgs.RunConfig, merged["run"], "run")
    algo_cfg = cfgs.from_dict(algo_cls.Config, merged["algo"], "algo")
    return {"run": cfgs.to_dict(run), "algo": cfgs.to_dict(algo_cfg)}


def env_spec(env: Any, family: str) -> EnvSpec:
    """What the algorithm may know of a batched env (sizes, horizon, channel names)."""
    _, info = env.reset()
    return EnvSpec(
        family=family,
        obs_dim=int(env.single_observation_space.shape[0]),
        act_dim=int(env.single_action_space.shape[0]),
        task_dim=int(np.asarray(info["task"]).shape[1]),
        max_steps=int(env.config.max_steps),
        obs_names=tuple(getattr(env, "obs_names", ())),
        action_names=tuple(getattr(env, "action_names", ())),
    )


def build_algorithm(resolved: dict[str, Any], spec: EnvSpec) -> Any:
    """Instantiate the algorithm of a resolved config."""
    cls = algorithm_class(resolved["run"]["algo"])
    cfg = cfgs.from_dict(cls.Config, resolved["algo"], "algo")
    torch.manual_seed(resolved["run"]["seed"])
    return cls(cfg, spec, seed=resolved["run"]["seed"])


def save_checkpoint(path: Path, algo: Any, resolved: dict[str, Any], progress: dict) -> None:
    """Write a checkpoint atomically (a crash mid-write never corrupts the last one)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "algo": resolved["run"]["algo"],
        "config": resolved,
        "config_hash": cfgs.config_hash(resolved),
        "progress": progress,
        "state": algo.state_dict(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, expected_algo: str | None = None) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check what it is.

    Raises:
        CheckpointError: missing, truncated/corrupt, wrong format, or another algorithm.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist; train first or pass --checkpoint")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError...
        raise CheckpointError(
            f"checkpoint {p} is truncated or corrupt ({type(exc).__name__}: {exc}); "
            "resume from an earlier copy or retrain"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {p} is not a metagrasp checkpoint of format {CHECKPOINT_FORMAT}"
        )
    if expected_algo is not None and data["algo"] != expected_algo:
        raise CheckpointError(
            f"checkpoint {p} was trained by {data['algo']!r}, not {expected_algo!r}; "
            f"use a run of {expected_algo!r} or pass --algo {data['algo']}"
        )
    return data


def restore_state(algo: Any, state: dict[str, Any], path: str | Path) -> None:
    """Load a checkpoint's state into a freshly built algorithm.

    Raises:
        CheckpointError: the state does not fit the network the config builds (a
            checkpoint from an older version of the algorithm, or an edited config).
    """
    try:
        algo.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} does not fit the {algo.name!r} network its config builds "
            f"({first}); it was written by another version of the algorithm or with another "
            "config: retrain, or use the metagrasp version that wrote it"
        ) from exc


def load_trained(
    run_dir: str | Path,
    checkpoint: str | Path | None = None,
    algo_overrides: dict[str, Any] | None = None,
) -> tuple[Any, dict[str, Any], EnvSpec]:
    """The trained algorithm of a run directory (its last checkpoint unless given).

    ``algo_overrides`` change algorithm settings that only matter when acting (e.g. RMA's
    ``act_with``); they are validated by the algorithm's config like any other.

    Returns:
        (algorithm, resolved config, env spec).

    Raises:
        CheckpointError: not a run directory, or a bad checkpoint.
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{run_dir} is not a training run (no config.json); train first")
    try:
        meta = json.loads(cfg_path.read_text())
        resolved = {"run": meta["run"], "algo": {**meta["algo"], **(algo_overrides or {})}}
        fields = meta["env_spec"].items()
        spec = EnvSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields})
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{cfg_path} is malformed ({exc}); it was not written by metagrasp train"
        ) from exc
    # Evaluation is small-batch inference beside env workers: more threads only contend.
    torch.set_num_threads(resolved["run"].get("torch_threads", 1))
    ckpt_path = checkpoint or run_dir / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(ckpt_path, resolved["run"]["algo"])
    algo = build_algorithm(resolved, spec)
    restore_state(algo, ckpt["state"], ckpt_path)
    return algo, resolved, spec


class Runner:
    """Trains one algorithm on one task family into a run directory.

    Args:
        resolved: config from :func:`resolve_config`.
        out: run directory (created; must be empty of another run unless resuming).
        resume: continue from ``out/checkpoints/last.pt`` with the saved config.
        progress_bar: show a tqdm bar on stderr.
        total_env_steps: with ``resume``, a larger budget to train the run on to (saved
            into its config.json); ``None`` keeps the saved budget.
        sampler: with ``resume``, ``{"ray": ..., "ray_workers": ..., "device": ...}`` to
            collect on another sampler, or learn on another device, than the saved one
            (saved into its config.json); where episodes are collected and the update
            computed is not part of what the checkpoint learned.
    """

    def __init__(
        self,
        resolved: dict[str, Any],
        out: str | Path,
        resume: bool = False,
        progress_bar: bool = True,
        total_env_steps: int | None = None,
        sampler: dict[str, Any] | None = None,
    ) -> None:
        self.out = Path(out)
        self.ckpt_path = self.out / "checkpoints" / "last.pt"
        self.progress_bar = progress_bar
        self.progress = {"iteration": 0, "env_steps": 0, "wall_s": 0.0}
        saved = self.out / "config.json"
        if resume:
            if not saved.is_file():
                raise CheckpointError(f"cannot resume: {saved} not found (is {self.out} a run?)")
            resolved = json.loads(saved.read_text())
            resolved = {"run": resolved["run"], "algo": resolved["algo"]}
            ckpt = load_checkpoint(self.ckpt_path, resolved["run"]["algo"])
            if total_env_steps is not None:
                done = int(ckpt["progress"]["env_steps"])
                if total_env_steps <= done:
                    raise ConfigError(
                        f"run.total_env_steps={total_env_steps:,} is not beyond the "
                        f"{done:,} steps already trained; give a larger budget"
                    )
                resolved["run"]["total_env_steps"] = int(total_env_steps)
            if sampler:
                checked = cfgs.from_dict(cfgs.RunConfig, {**resolved["run"], **sampler}, "run")
                resolved["run"].update({k: getattr(checked, k) for k in sampler})
        elif saved.exists():
            raise ConfigError(
                f"{self.out} already holds a run; pass --resume to continue it or choose "
                "another --out"
            )
        self.resolved = resolved
        run = resolved["run"]
        self.run = run
        torch.set_num_threads(run["torch_threads"])
        from metagrasp.policies.device import place_learner
        from metagrasp.policies.sampler import make_sampler

        # The local vector env, or rollout workers on Ray (run.ray); the algorithm
        # collects through either without knowing which.
        self.sampler = make_sampler(run)
        try:
            self.spec = self.sampler.env_spec(run["task"])
            self.algo = build_algorithm(resolved, self.spec)
            # Before the checkpoint loads: the optimisers' state then lands on the
            # device of the parameters it belongs to.
            self.device = place_learner(self.algo, run.get("device", "cpu"))
            if resume:
                restore_state(self.algo, ckpt["state"], self.ckpt_path)
                self.progress = dict(ckpt["progress"])
        except BaseException:
            self.sampler.close()
            raise
        self.out.mkdir(parents=True, exist_ok=True)
        meta = {
            **resolved,
            "env_spec": {k: v for k, v in self.spec.__dict__.items()},
            "config_hash": cfgs.config_hash(resolved),
        }
        saved.write_text(json.dumps(meta, indent=2) + "\n")

    def train(self) -> dict[str, Any]:
        """Train to the budget; returns the final progress (iteration, env steps, time)."""
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        run = self.run
        csv_path = self.out / "metrics.csv"
        # Scalars are logged at env steps: on resume, hide only what came after the checkpoint.
        writer = SummaryWriter(str(self.out / "tb"), purge_step=self.progress["env_steps"] + 1)
        csv_file = None
        csv_w: csv.DictWriter | None = None
        if csv_path.exists():
            # Resuming: rows logged after the checkpoint will be logged again; drop them.
            with csv_path.open(newline="") as f:
                rows = list(csv.reader(f))
            col = rows[0].index("iteration") if rows and "iteration" in rows[0] else None
            if col is not None:
                keep = [r for r in rows[1:] if int(r[col]) <= self.progress["iteration"]]
                if len(keep) < len(rows) - 1:
                    with csv_path.open("w", newline="") as f:
                        csv.writer(f).writerows([rows[0], *keep])
        bar = tqdm(
            total=run["total_env_steps"],
            initial=self.progress["env_steps"],
            unit="step",
            desc=f"{run['algo']} {run['task']}",
            disable=not self.progress_bar,
            dynamic_ncols=True,
        )
        start = time.monotonic() - self.progress["wall_s"]
        # SIGTERM (a scheduler's preemption, `kill`, a closed session) stops like Ctrl-C:
        # with a checkpoint. Only the main thread may install signal handlers.
        in_main = threading.current_thread() is threading.main_thread()
        old_term = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main else None
        try:
            while self.progress["env_steps"] < run["total_env_steps"]:
                metrics = self.algo.train_iteration(self.sampler)
                bad = [k for k, v in metrics.items() if not math.isfinite(v)]
                if bad:
                    raise TrainingError(
                        f"training diverged at iteration {self.progress['iteration'] + 1}: "
                        f"{bad} not finite; "
                        + (
                            f"the last good checkpoint is {self.ckpt_path}; "
                            if self.ckpt_path.exists()
                            else "no checkpoint was written yet; "
                        )
                        + "lower the learning rate or check the reward scale"
                    )
                steps = int(metrics.pop("env_steps"))
                self.progress["iteration"] += 1
                self.progress["env_steps"] += steps
                self.progress["wall_s"] = time.monotonic() - start
                bar.update(steps)
                it = self.progress["iteration"]
                if it % run["log_every"] == 0:
                    row = {**self.progress, **metrics}
                    for k, v in metrics.items():
                        writer.add_scalar(k, v, self.progress["env_steps"])
                    # (Re)open on the first row, and when a metric first appears (SAC's
                    # losses after warm-up): the header widens instead of dropping it.
                    if csv_w is None or not set(row) <= set(csv_w.fieldnames):
                        if csv_file is not None:
                            csv_file.close()
                        new = not csv_path.exists()
                        fields = list(row) if new else _widened_header(csv_path, row)
                        csv_file = csv_path.open("a", newline="")
                        csv_w = csv.DictWriter(csv_file, fields)
                        if new:
                            csv_w.writeheader()
                    csv_w.writerow(row)
                    csv_file.flush()
                    bar.set_postfix(
                        ret=f"{metrics.get('return', float('nan')):.2f}",
                        succ=f"{metrics.get('success', float('nan')):.2f}",
                    )
                if it % run["checkpoint_every"] == 0:
                    self._checkpoint()
                if run.get("keep_every") and it % run["keep_every"] == 0:
                    # A run resumed from an older config has no keep_every (hence .get).
                    keep = self.ckpt_path.with_name(f"step_{self.progress['env_steps']}.pt")
                    save_checkpoint(keep, self.algo, self.resolved, dict(self.progress))
            self._checkpoint()
        except KeyboardInterrupt:
            # Resumable: what was trained so far is kept (--resume continues it).
            self._checkpoint()
            raise
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, old_term)
            bar.close()
            writer.close()
            if csv_file is not None:
                csv_file.close()
            self.sampler.close()
        return dict(self.progress)

    def _checkpoint(self) -> None:
        save_checkpoint(self.ckpt_path, self.algo, self.resolved, dict(self.progress))


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _widened_header(path: Path, row: dict[str, Any]) -> list[str]:
    """The CSV header of ``path`` plus the columns of ``row`` it lacks. When it lacks any,
    the file is rewritten with them (empty in the rows already written), atomically, so an
    interruption leaves the old file whole."""
    with path.open(newline="") as f:
        fields = next(csv.reader(f), [])
        missing = [k for k in row if k not in fields]
        if not missing:
            return fields
        f.seek(0)
        old = list(csv.DictReader(f))
    fields += missing
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerows(old)
    os.replace(tmp, path)
    return fields
