"""PEARL: the posterior arithmetic, context/RL buffer separation, meta-test state, exports.

Seeded reproducibility, checkpoint round trips (optimizers, normalisers, buffers, task
pool) and the CLI train/eval smoke runs of PEARL are covered by the registry-wide
parametrised tests in ``test_training.py`` and ``test_train_cli.py``; this file checks what
is specific to PEARL. Everything runs on ``point-nav`` in-process with tiny networks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metagrasp.policies.collect import collect_episodes
from metagrasp.policies.evaluate import meta_test
from metagrasp.policies.pearl import (
    PEARL,
    ContextEncoder,
    LatentPolicy,
    kl_to_prior,
    product_of_gaussians,
)
from metagrasp.policies.runner import build_algorithm, env_spec, resolve_config
from metagrasp.sim import make_vector_env

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {
    "hidden": [16, 16],
    "encoder_hidden": [16],
    "meta_batch": 4,
    "batch_size": 8,
    "context_batch": 20,
    "warmup_steps": 1,
    "updates_per_step": 0.02,
}


def build(n_envs: int = 4, seed: int = 0, **algo) -> tuple[object, PEARL]:
    resolved = resolve_config(
        "pearl",
        "point-nav",
        "quick",
        overrides={
            "run": {"num_envs": n_envs, "workers": 0, "seed": seed},
            "algo": {**TINY, **algo},
        },
    )
    env = make_vector_env("point-nav", n_envs, seed=seed, workers=0)
    return env, build_algorithm(resolved, env_spec(env, "point-nav"))


# --- the posterior -------------------------------------------------------------------------


def test_product_of_gaussians_matches_the_closed_form():
    # N(1, 1) x N(3, 1) = N(2, 1/2); N(0, 1) x N(4, 3): var 1/(1 + 1/3) = 3/4, mean 3/4 * 4/3.
    mu = torch.tensor([[[1.0, 0.0], [3.0, 4.0]]])  # (B=1, T=2, L=2)
    var = torch.tensor([[[1.0, 1.0], [1.0, 3.0]]])
    mean, post_var = product_of_gaussians(mu, var)
    torch.testing.assert_close(mean, torch.tensor([[2.0, 1.0]]))
    torch.testing.assert_close(post_var, torch.tensor([[0.5, 0.75]]))
    # Masked factors do not count; a row without any valid factor is the prior N(0, I).
    mask = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    mean, post_var = product_of_gaussians(mu.expand(2, 2, 2), var.expand(2, 2, 2), mask)
    torch.testing.assert_close(mean, torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    torch.testing.assert_close(post_var, torch.tensor([[1.0, 1.0], [1.0, 1.0]]))
    # Order does not matter (a set of transitions, not a sequence).
    perm = product_of_gaussians(mu.flip(1), var.flip(1))
    torch.testing.assert_close(perm[0], torch.tensor([[2.0, 1.0]]))


def test_kl_to_prior_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(5, 3, generator=gen)
    var = torch.rand(5, 3, generator=gen) + 0.1
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, var.sqrt()), torch.distributions.Normal(0.0, 1.0)
    ).sum(-1)
    torch.testing.assert_close(kl_to_prior(mean, var), expected)
    assert kl_to_prior(torch.zeros(1, 3), torch.ones(1, 3)).item() == 0.0
    # One closed-form value: mean 1, var e in one dimension -> 0.5 * (e + 1 - 1 - 1).
    value = kl_to_prior(torch.tensor([[1.0]]), torch.tensor([[math.e]])).item()
    assert value == pytest.approx(0.5 * (math.e - 1.0))


def test_posterior_uses_only_valid_transitions_and_sharpens_with_data():
    env, algo = build()
    state = algo.init_state(4)
    torch.testing.assert_close(state["mean"], torch.zeros(4, 5))
    torch.testing.assert_close(state["var"], torch.ones(4, 5))

    def policy(obs, task):
        return algo.act(obs, task, state)[0], {}

    eps = [collect_episodes(env, policy, 20) for _ in range(2)]
    env.close()
    # Member 1's second half of episode 0 becomes padding, filled with garbage.
    eps[0].mask[1, 10:] = 0.0
    mean, var = algo.posterior(eps)
    eps[0].obs[1, 10:] = 1e3
    eps[0].rewards[1, 10:] = -1e3
    mean_g, var_g = algo.posterior(eps)
    torch.testing.assert_close(mean, mean_g)
    torch.testing.assert_close(var, var_g)
    # The same posterior from the encoder on member 1's valid transitions only.
    valid = np.concatenate([eps[0].mask[1], eps[1].mask[1]]) > 0

    def member1(name):
        a = np.concatenate([getattr(eps[0], name)[1], getattr(eps[1], name)[1]])
        return torch.as_tensor(a[valid])[None]

    with torch.no_grad():
        m1, v1 = algo.encoder(
            member1("obs"),
            member1("actions").clamp(-1, 1),
            member1("rewards"),
            member1("next_obs"),
            torch.ones(1, int(valid.sum())),
        )
    torch.testing.assert_close(mean[1:2], m1)
    torch.testing.assert_close(var[1:2], v1)
    # More data can only add precision: one episode's posterior is wider than two's.
    _, var_one = algo.posterior(eps[1:])
    assert torch.all(var < var_one) and torch.all(var_one < 1.0)


# --- training: buffers, collection ------------------------------------------------------------


def test_context_buffer_holds_the_round_and_the_rl_buffer_accumulates():
    env, algo = build(num_train_tasks=4)  # 4 members on a pool of 4: every task every round
    round_steps = (1 + 3) * 20
    for it in (1, 2):
        metrics = algo.train_iteration(env)
        assert metrics["env_steps"] == 4 * round_steps
        np.testing.assert_array_equal(algo.context.size, [round_steps] * 4)
        np.testing.assert_array_equal(algo.replay.size, [it * round_steps] * 4)
    env.close()
    # Without the posterior episodes in the context, only the prior episode is kept.
    env, algo = build(num_train_tasks=4, posterior_in_context=False)
    algo.train_iteration(env)
    env.close()
    np.testing.assert_array_equal(algo.context.size, [20] * 4)
    np.testing.assert_array_equal(algo.replay.size, [round_steps] * 4)


def test_training_changes_the_encoder_and_tasks_come_from_the_pool():
    env, algo = build(num_train_tasks=6)
    before = {k: v.clone() for k, v in algo.encoder.net.state_dict().items()}
    metrics = algo.train_iteration(env)
    assert metrics["updates"] > 0 and math.isfinite(metrics["kl"])
    assert any(not torch.equal(before[k], v) for k, v in algo.encoder.net.state_dict().items())
    goals = {round(t["goal_angle"], 9) for t in algo.tasks}
    current = {round(t.goal_angle, 9) for t in env.current_tasks()}
    env.close()
    assert len(algo.tasks) == 6 and current <= goals


# --- meta-test and exports --------------------------------------------------------------------


def test_meta_test_protocol_and_deterministic_chunking():
    env, algo = build()
    algo.train_iteration(env)
    env.close()
    raw = meta_test(algo, algo.spec, "test", 2, seeds=(0,), num_envs=16, workers=0)
    assert raw["success"].shape == (1, 40, 3)
    assert np.all(raw["returns"] < 0) and np.all(np.isfinite(raw["returns"]))
    whole = meta_test(algo, algo.spec, "test", 1, workers=0, deterministic=True)
    chunked = meta_test(algo, algo.spec, "test", 1, num_envs=16, workers=0, deterministic=True)
    np.testing.assert_allclose(whole["returns"], chunked["returns"], rtol=1e-5, atol=1e-5)


def test_export_modules_are_plain_modules_with_the_documented_signatures():
    env, algo = build()
    algo.train_iteration(env)
    env.close()
    assert isinstance(algo.encoder, ContextEncoder) and isinstance(algo.policy, LatentPolicy)
    # The observation normaliser lives in (and is shared by) both exported modules.
    assert algo.encoder.norm is algo.norm and algo.policy.norm is algo.norm
    assert {"norm.mean", "norm.var", "norm.count"} <= set(algo.encoder.state_dict())
    assert {"norm.mean", "norm.var", "norm.count"} <= set(algo.policy.state_dict())
    assert algo.norm.count.item() > 1
    b, t = 3, 7
    gen = torch.Generator().manual_seed(1)
    obs, nobs = torch.randn(b, t, 2, generator=gen), torch.randn(b, t, 2, generator=gen)
    act, rew = torch.rand(b, t, 2, generator=gen) * 2 - 1, -torch.rand(b, t, generator=gen)
    with torch.no_grad():
        mean, var = algo.encoder(obs, act, rew, nobs, torch.ones(b, t))
        mu_i, var_i = algo.encoder.factors(obs, act, rew, nobs)
    assert mean.shape == var.shape == (b, 5) and mu_i.shape == var_i.shape == (b, t, 5)
    torch.testing.assert_close((mean, var), product_of_gaussians(mu_i, var_i))
    # The policy's forward is the deterministic action of the algorithm at that latent.
    obs1 = np.array([[0.1, 0.2], [0.0, 0.5], [-0.3, 0.9]], np.float32)
    with torch.no_grad():
        a = algo.policy(torch.as_tensor(obs1), mean)
    state = {"mean": mean, "var": var, "z": mean + 1.0}
    a_det, _ = algo.act(obs1, np.zeros((3, 2), np.float32), state, deterministic=True)
    np.testing.assert_allclose(a.numpy(), a_det, rtol=1e-6)
    assert a.shape == (3, 2) and torch.all(a.abs() <= 1.0)
    # Stochastic acting uses the sampled z, deterministic acting the posterior mean.
    a_sto, _ = algo.act(obs1, np.zeros((3, 2), np.float32), {**state, "mean": state["z"]}, True)
    assert not np.allclose(a_sto, a_det)


def test_grasp_lift_round_runs(tmp_path):
    from metagrasp.cli import main

    out = tmp_path / "pearl-grasp"
    args = [
        "train",
        "--algo",
        "pearl",
        "--task",
        "grasp-lift",
        "--preset",
        "quick",
        "--set",
        "run.total_env_steps=400",
        "--set",
        "run.num_envs=2",
        "--set",
        "run.workers=0",
        "--set",
        "algo.warmup_steps=1",
        "--set",
        "algo.updates_per_step=0.005",
        "--set",
        "algo.meta_batch=2",
        "--set",
        "algo.batch_size=8",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    assert (out / "checkpoints" / "last.pt").is_file()


def test_config_refuses_a_context_smaller_than_its_minimum():
    from metagrasp.errors import ConfigError
    from metagrasp.policies.pearl import PEARLConfig

    with pytest.raises(ConfigError, match="context_batch=3 must be >= algo.context_min=5"):
        PEARLConfig(context_batch=3, context_min=5)
    with pytest.raises(ConfigError, match=r"algo\.posterior_episodes=-1"):
        PEARLConfig(posterior_episodes=-1)
