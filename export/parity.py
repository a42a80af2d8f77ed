"""Parity of exported graphs with the training code: random inputs and real rollouts.

Two checks, both reported in the bundle's metadata and enforced by ``metagrasp export``
(difference at most :data:`TOLERANCE` in fp32, absolute, or relative where an output
exceeds 1 in magnitude):

* :func:`graph_parity` — each graph on ``n`` random inputs (its plan's sampler) under
  onnxruntime against the graph's training-side reference (for CAVIA's adapt graph, the
  autograd inner loop that training runs, not the explicit backward that was traced);
* :func:`rollout_parity` — the loaded bundle end to end (the device runtime: act, observe, GAE,
  adapt) against the algorithm's own ``act`` / ``adapt`` on episodes rolled out in the
  simulator on the family's test split: actions before and after one adaptation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from metagrasp.export.plan import GraphSpec

TOLERANCE = 1e-5
"""Largest allowed difference between fp32 ONNX and torch, :func:`scaled_diff`: absolute
for outputs within +-1 (actions, contexts), relative beyond. A critic trained on grasp-lift
predicts values in the hundreds, where float32 itself resolves only ~3e-5 (one ulp at 256),
so an absolute 1e-5 refused every trained grasp-lift CAVIA for rounding alone."""


def scaled_diff(got: np.ndarray, want: np.ndarray) -> float:
    """``max |got - want| / max(1, |want|)`` over the elements (0 for empty arrays)."""
    if got.size == 0:
        return 0.0
    return float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))))


def session(model: onnx.ModelProto | bytes, threads: int = 1) -> ort.InferenceSession:
    """An onnxruntime CPU session on one thread (as on the device)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def graph_parity(
    graph: GraphSpec, model: onnx.ModelProto, n: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Difference ONNX vs the training-side reference on ``n`` random inputs: the largest
    absolute one (``max_abs_diff``) and the largest :func:`scaled_diff`
    (``max_scaled_diff``, what :data:`TOLERANCE` bounds), per output and overall."""
    rng = np.random.default_rng(seed)
    feed = graph.sample(n, rng)
    got = session(model).run(list(graph.outputs), {k: feed[k] for k in graph.inputs})
    ref_fn = graph.reference or graph.module
    args = [torch.as_tensor(feed[k]) for k in graph.inputs]
    want = ref_fn(*args)
    if isinstance(want, torch.Tensor):
        want = (want,)
    per, scaled = {}, {}
    for name, a, b in zip(graph.outputs, got, want, strict=True):
        b = b.detach().numpy()
        per[name] = float(np.max(np.abs(a - b))) if a.size else 0.0
        scaled[name] = scaled_diff(a, b)
    return {
        "inputs": n,
        "max_abs_diff": max(per.values()),
        "max_scaled_diff": max(scaled.values()),
        "per_output": per,
    }


def _episode_dicts(ep: Any) -> list[dict[str, np.ndarray]]:
    """One collected episode block as the runtime's episode dict (members leading), with
    the outcome flags the grip search reads where the family has them."""
    out = {
        "obs": ep.obs,
        "actions": ep.actions,
        "rewards": ep.rewards,
        "next_obs": ep.next_obs,
        "dones": ep.dones,
        "mask": ep.mask,
        "lifted": ep.success,
    }
    for name in ("crushed", "gripped"):
        if getattr(ep, name) is not None:
            out[name] = getattr(ep, name)
    if ep.crushed is not None:  # a grasp family: the object's rise, for keep_raised
        from metagrasp.policies.grip_search import raised_flags

        out["raised"] = raised_flags(ep)
    return [out]


def _keep(old: Any, new: Any, valid: np.ndarray) -> Any:
    """The bundle state of members whose episode has ended stays as it was.

    The algorithms' ``observe`` commits a step only for members still in their episode
    (a robot stops stepping when its episode ends); the replay does the same here.
    """
    if not isinstance(new, dict):
        return new
    return {k: np.where(valid.reshape(-1, *[1] * (v.ndim - 1)), v, old[k]) for k, v in new.items()}


def _compare_actions(
    algo: Any, bundle: Any, ep: Any, algo_state: Any, state: Any
) -> tuple[float, int, Any, Any]:
    """Max abs diff of deterministic actions over every valid step of a block.

    Both sides step through the block as on the device: the algorithm with ``act`` then
    ``observe``, the bundle with ``act`` then ``observe(reward, done)`` (``done`` = 1 on an
    episode's last step: the boundary flag of recurrent policies); each feeds back its
    own deterministic action, with the block's observations and rewards.

    Returns:
        ``(max abs diff, valid steps, algorithm state, bundle state)`` after the block.
    """
    worst, count = 0.0, 0
    horizon = ep.obs.shape[1]
    for t in range(horizon):
        valid = ep.mask[:, t] > 0
        if not valid.any():
            break
        obs, task = ep.obs[:, t], ep.task
        want, algo_next = algo.act(obs, task, algo_state, deterministic=True)
        want = np.clip(np.asarray(want, np.float32), -1.0, 1.0)
        got, new = bundle.act(obs, state, task=task if bundle.task_names else None)
        worst = max(worst, float(np.max(np.abs(got - want)[valid])))
        count += int(valid.sum())
        step = {
            "obs": obs,
            "actions": want,
            "rewards": ep.rewards[:, t],
            "next_obs": ep.next_obs[:, t],
            "dones": ep.dones[:, t],
            "mask": ep.mask[:, t],
        }
        algo_state = algo.observe(algo_next, step)
        last = ep.mask[:, t + 1] <= 0 if t + 1 < horizon else np.ones_like(valid)
        new = bundle.observe(new, ep.rewards[:, t], (valid & last).astype(np.float32))
        state = _keep(state, new, valid)
    return worst, count, algo_state, state


def rollout_parity(
    algo: Any, spec: Any, bundle_path: str | Path, members: int = 5, seed: int = 0
) -> dict[str, Any]:
    """The bundle through the device runtime vs the algorithm, on real sim episodes.

    One block of ``members`` episodes (the algorithm's exploration policy, unadapted, on
    test-split tasks) feeds: the unadapted deterministic actions at every valid step,
    one adaptation on that block (runtime ``adapt`` vs the algorithm's ``adapt``), and
    the adapted deterministic actions at the same steps. Stateful policies (RL²'s
    hidden state, RMA's history) carry their state through the block and, where the
    algorithm does, on into the second pass.
    """
    from metagrasp.adapt.runtime import load_bundle
    from metagrasp.policies.collect import collect_episodes
    from metagrasp.sim.registry import family_split_tasks, make_vector_env

    bundle = load_bundle(bundle_path)
    tasks = list(family_split_tasks(spec.family, "test"))
    env = make_vector_env(spec.family, members, split="test", seed=seed, workers=0)
    try:
        env.set_tasks([tasks[i % len(tasks)] for i in range(members)])
        live = [algo.init_state(members)]

        def policy(obs: np.ndarray, task: np.ndarray) -> tuple[np.ndarray, dict]:
            a, live[0] = algo.act(obs, task, live[0], deterministic=False)
            return a, {}

        def on_step(step: dict[str, np.ndarray]) -> None:
            live[0] = algo.observe(live[0], step)

        ep = collect_episodes(env, policy, spec.max_steps, on_step)
    finally:
        env.close()
    algo_state, state = algo.init_state(members), bundle.init_state(members)
    before, n_obs, algo_state, state = _compare_actions(algo, bundle, ep, algo_state, state)
    adapted_algo = algo.adapt(algo_state, [ep])
    adapted = bundle.adapt(state, _episode_dicts(ep))
    after, _, _, _ = _compare_actions(algo, bundle, ep, adapted_algo, adapted)
    return {
        "episodes": members,
        "observations": n_obs,
        "max_abs_diff_act": before,
        "max_abs_diff_adapted_act": after,
        "max_abs_diff": max(before, after),
    }
