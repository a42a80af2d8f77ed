"""ONNX export of PEARL and RL² (#5): graphs vs the training code at point-nav and grasp
sizes, the device runtime vs the algorithms on real sim rollouts, PEARL's posterior as
the adapt graph and RL²'s recurrent step driven by ``observe``.

The export of trained runs (metadata, CLI) is covered with the other algorithms by
``test_export.py``; here the algorithms are built in memory with their weights and
normalisers perturbed, so that every input of every graph matters.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from metagrasp.adapt.runtime import load_bundle
from metagrasp.export.parity import TOLERANCE, graph_parity, rollout_parity
from metagrasp.export.writer import trace
from metagrasp.policies.base import EnvSpec
from metagrasp.policies.collect import Episodes
from metagrasp.policies.pearl import PEARL, PEARLConfig
from metagrasp.policies.rl2 import RL2, RL2Config
from tests.bundles import write_plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")

POINT = EnvSpec("point-nav", 2, 2, 2, 20, ("x", "y"), ("vx", "vy"))


def grasp_spec() -> EnvSpec:
    from metagrasp.actions import EE_ACTION_NAMES, OBS_NAMES

    return EnvSpec("grasp-lift", 33, 6, 11, 100, OBS_NAMES, EE_ACTION_NAMES)


def perturbed(algo, seed: int = 0):
    """Weights moved off their init and normalisers fed data (non-trivial statistics)."""
    gen = torch.Generator().manual_seed(seed)
    nets = [algo.encoder.net, algo.policy.body] if algo.name == "pearl" else [algo.net]
    norms = (
        [algo.norm, algo.rew_norm] if algo.name == "pearl" else [algo.net.norm, algo.net.rew_norm]
    )
    with torch.no_grad():
        for net in nets:
            for p in net.parameters():
                # About an init's worth on top (activations stay O(1), as in training).
                p.add_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
        for norm in norms:
            d = norm.mean.numel()
            norm.update(torch.randn(400, d, generator=gen) * 0.5 + 0.2)
    return algo


def tiny(name: str, spec: EnvSpec = POINT, **cfg):
    if name == "pearl":
        c = {"hidden": (16, 16), "encoder_hidden": (16,), "latent_dim": 3, "num_train_tasks": 2}
        return perturbed(PEARL(PEARLConfig(**{**c, **cfg}), spec))
    return perturbed(RL2(RL2Config(**{"hidden": (8,), "gru_size": 8, **cfg}), spec))


def bundle_of(algo, path):
    plan = algo.export_modules()
    write_plan(plan, algo.spec, path, reward_free=True, restart=False)
    return plan, load_bundle(path)


@pytest.mark.parametrize("name", ["pearl", "rl2"])
def test_graphs_match_training_at_grasp_sizes(name):
    """1,000 random inputs per graph, grasp-lift sizes (PEARL: up to 3 x 100 transitions)."""
    cfg = {"hidden": (128, 128), "encoder_hidden": (128, 128)} if name == "pearl" else {}
    algo = tiny(name, grasp_spec(), **cfg)
    plan = algo.export_modules()
    assert {g.role for g in plan.graphs} == ({"policy", "adapt"} if name == "pearl" else {"policy"})
    for g in plan.graphs:
        model = trace(g)
        onnx.checker.check_model(model, full_check=True)
        res = graph_parity(g, model, 1000)
        assert res["max_abs_diff"] <= TOLERANCE, (g.role, res)
        # Not vacuous: the outputs vary with the inputs by far more than the tolerance.
        feed = g.sample(50, np.random.default_rng(1))
        out = g.reference(*[torch.as_tensor(feed[k]) for k in g.inputs])[0]
        assert float(out.std(0).max()) > 1e-2


@pytest.mark.parametrize("name", ["pearl", "rl2"])
def test_runtime_matches_the_algorithm_on_real_rollouts(tmp_path, name):
    """100 sim episodes: unadapted actions, one adaptation (or episode boundary), again."""
    algo = tiny(name)
    plan, _ = bundle_of(algo, tmp_path / "p.onnx")
    res = rollout_parity(algo, algo.spec, tmp_path / "p.onnx", members=100)
    assert res["observations"] >= 1000
    assert res["max_abs_diff"] <= TOLERANCE, res
    assert plan.exploration == "none"


def episodes(spec: EnvSpec, lengths: list[int], rng: np.random.Generator) -> list[Episodes]:
    """Single-member episodes of the given lengths (padded to the horizon)."""
    t, o, a = spec.max_steps, spec.obs_dim, spec.act_dim
    out = []
    for n in lengths:
        mask = (np.arange(t) < n).astype(np.float32)[None]
        x = rng.standard_normal((1, t + 1, o)).astype(np.float32)
        out.append(
            Episodes(
                obs=x[:, :-1] * mask[..., None],
                actions=(rng.uniform(-1.3, 1.3, (1, t, a)) * mask[..., None]).astype(np.float32),
                rewards=(rng.standard_normal((1, t)) * mask).astype(np.float32),
                next_obs=x[:, 1:] * mask[..., None],
                dones=np.zeros((1, t), np.float32),
                mask=mask,
                task=np.zeros((1, spec.task_dim), np.float32),
                success=np.zeros(1, bool),
            )
        )
    return out


@pytest.mark.parametrize("next_obs", [True, False])
def test_pearl_bundle_acts_with_the_prior_then_the_posterior_mean(tmp_path, next_obs):
    algo = tiny("pearl", context_next_obs=next_obs)
    _, bundle = bundle_of(algo, tmp_path / "p.onnx")
    assert bundle.metadata["adaptation"]["kind"] == "latent" and not bundle.reward_free
    rng = np.random.default_rng(0)
    eps = episodes(algo.spec, [20, 7, 13], rng)
    obs = eps[0].obs[0]
    # k = 0: the prior mean, as PEARL.act(deterministic=True) with init_state().
    state = bundle.init_state()
    assert np.all(state["z"] == 0) and np.all(state["z_var"] == 1)
    got, _ = bundle.act(obs, {k: np.repeat(v, 20, 0) for k, v in state.items()})
    want, _ = algo.act(obs, None, algo.init_state(20), deterministic=True)
    assert np.abs(got - want).max() <= TOLERANCE
    # The device records unpadded episodes; adapt restarts from the prior every time.
    fields = ["obs", "actions", "rewards"] + (["next_obs"] if next_obs else [])
    dev = [{f: getattr(e, f)[0, : int(e.mask.sum())] for f in fields} for e in eps]
    for k in (1, 3):
        state = bundle.adapt(state, dev[:k])
        ref = algo.adapt(algo.init_state(1), eps[:k])
        assert np.abs(state["z"] - ref["mean"].numpy()).max() <= TOLERANCE
        assert np.abs(state["z_var"] - ref["var"].numpy()).max() <= TOLERANCE
    assert np.abs(state["z"]).max() > 1e-2 and state["z_var"].max() < 1.0  # it moved
    got, _ = bundle.act(obs, {k: np.repeat(v, 20, 0) for k, v in state.items()})
    want, _ = algo.act(obs, None, {"mean": ref["mean"].repeat(20, 1)}, deterministic=True)
    assert np.abs(got - want).max() <= TOLERANCE


def test_rl2_bundle_follows_a_trial_through_observe(tmp_path):
    """Two episodes of a task: act, observe(reward, done) vs act, observe, adapt."""
    algo = tiny("rl2")
    _, bundle = bundle_of(algo, tmp_path / "p.onnx")
    assert set(bundle.init_state()) == {"hidden", "prev_action", "prev_reward", "prev_done"}
    assert bundle.metadata["adaptation"]["kind"] == "recurrent" and not bundle.adapts
    rng = np.random.default_rng(0)
    eps = episodes(algo.spec, [20, 11], rng)

    def trial(boundary_done: float) -> tuple[float, list[np.ndarray]]:
        state, ref, worst, acts = bundle.init_state(), algo.init_state(1), 0.0, []
        for e in eps:
            n = int(e.mask.sum())
            for t in range(n):
                a, state = bundle.act(e.obs[0, t], state)
                b, ref = algo.act(e.obs[:, t], None, ref, deterministic=True)
                worst = max(worst, float(np.abs(a - np.clip(b[0], -1, 1)).max()))
                acts.append(a)
                step = {"actions": b, "rewards": e.rewards[:, t], "mask": np.ones(1)}
                ref = algo.observe(ref, step)
                done = boundary_done if t == n - 1 else 0.0
                state = bundle.observe(state, e.rewards[0, t], done)
            ref = algo.adapt(ref, [e])
            assert bundle.adapt(state, [{"obs": e.obs[0]}]) is state  # no adapt graph
        return worst, acts

    worst, acts = trial(1.0)
    assert worst <= TOLERANCE
    # Not vacuous: the episode-boundary flag changes what the policy does next.
    _, wrong = trial(0.0)
    assert np.abs(acts[20] - wrong[20]).max() > 1e-3
