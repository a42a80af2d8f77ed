"""RL²: the step module, the hidden state carried across episodes and reset across tasks,
trial bookkeeping (masked steps, episode boundaries, GAE across them), meta-test runs.

Seeded reproducibility, checkpoint round trips and the CLI train/eval smoke runs of RL²
are covered by the registry-wide parametrised tests in ``test_training.py`` and
``test_train_cli.py``; this file checks what is specific to RL².
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metagrasp.policies.collect import Episodes, collect_episodes
from metagrasp.policies.evaluate import meta_test
from metagrasp.policies.networks import gae
from metagrasp.policies.rl2 import RL2, RL2Net
from metagrasp.policies.runner import build_algorithm, env_spec, resolve_config
from metagrasp.sim import make_vector_env

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"hidden": [8], "gru_size": 8, "epochs": 1, "minibatches": 2, "trial_episodes": 3}


def build(n_envs: int = 4, seed: int = 0, **algo) -> tuple[object, RL2]:
    resolved = resolve_config(
        "rl2",
        "point-nav",
        "quick",
        overrides={
            "run": {"num_envs": n_envs, "workers": 0, "seed": seed},
            "algo": {**TINY, **algo},
        },
    )
    env = make_vector_env("point-nav", n_envs, seed=seed, workers=0)
    return env, build_algorithm(resolved, env_spec(env, "point-nav"))


def test_step_module_matches_the_sequence_forward():
    torch.manual_seed(0)
    net = RL2Net(obs_dim=3, act_dim=2, hidden=(8,), gru_size=6, log_std_init=-0.5)
    net.norm.update(torch.randn(50, 3) * 4 + 1)
    net.rew_norm.update(torch.randn(50, 1) * 2)
    b, t = 4, 9
    obs, pa = torch.randn(b, t, 3), torch.rand(b, t, 2) * 2 - 1
    pr, pd = torch.randn(b, t, 1), (torch.rand(b, t, 1) > 0.7).float()
    h0 = torch.randn(b, 6)
    with torch.no_grad():
        mu_seq, h_seq = net.sequence(obs, pa, pr, pd, h0)
        v_seq = net.values(obs, pa, pr, pd)
        h = h0
        for i in range(t):
            mu, h = net(obs[:, i], pa[:, i], pr[:, i], pd[:, i], h)
            torch.testing.assert_close(mu, mu_seq[:, i], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h, h_seq, rtol=1e-5, atol=1e-6)
    assert mu_seq.shape == (b, t, 2) and v_seq.shape == (b, t) and h.shape == (b, 6)
    # The observation and reward normalisers are part of the exported step module.
    assert {"norm.mean", "norm.var", "rew_norm.mean", "rew_norm.var"} <= set(net.state_dict())


def test_hidden_state_is_carried_across_episodes_and_reset_for_a_new_trial():
    env, algo = build()
    assert algo.step is algo.net
    trial_a = algo.collect(env)
    trial_b = algo.collect(env)  # a new trial on new tasks: starts from scratch again
    env.close()
    for blocks in (trial_a, trial_b):
        first, second = blocks[0], blocks[1]
        # A trial starts with no previous step; later episodes get the episode boundary
        # flag and the last action and reward of the episode before.
        for k in ("prev_action", "prev_reward", "prev_done"):
            assert np.all(first.extras[k][:, 0] == 0.0), k
        assert np.all(first.extras["prev_done"] == 0.0)
        np.testing.assert_array_equal(second.extras["prev_done"][:, 0], 1.0)
        np.testing.assert_array_equal(second.extras["prev_done"][:, 1:], 0.0)
        np.testing.assert_array_equal(second.extras["prev_reward"][:, 0], first.rewards[:, -1])
        np.testing.assert_array_equal(
            second.extras["prev_action"][:, 0], np.clip(first.actions[:, -1], -1, 1)
        )
        np.testing.assert_array_equal(first.extras["prev_reward"][:, 1:], first.rewards[:, :-1])
    # Every episode starts at (0, 0): at the start of a trial (zero hidden state, no
    # previous step) every member has the same mean action; in the second episode the
    # carried hidden state makes them differ, member by member.
    for blocks in (trial_a, trial_b):
        m0 = blocks[0].extras["mean"][:, 0]
        assert np.allclose(m0, m0[0])
        assert np.ptp(blocks[1].extras["mean"][:, 0, 0]) > 1e-5
    np.testing.assert_allclose(trial_a[0].extras["mean"][:, 0], trial_b[0].extras["mean"][:, 0])


def test_meta_test_state_matches_the_recurrent_forward_of_the_episodes():
    """The per-step bookkeeping of act/observe/adapt equals one GRU pass over the trial."""
    env, algo = build(n_envs=3)
    state = [algo.init_state(3)]

    def policy(obs, task):
        s = state[0]
        a, state[0] = algo.act(obs, task, s, deterministic=True)
        prev = {k: s[k].numpy() for k in ("prev_action", "prev_reward", "prev_done")}
        return a, {
            **prev,
            "prev_reward": prev["prev_reward"][:, 0],
            "prev_done": prev["prev_done"][:, 0],
        }

    def on_step(step):
        state[0] = algo.observe(state[0], step)

    eps = []
    for _ in range(2):
        eps.append(collect_episodes(env, policy, 20, on_step))
        state[0] = algo.adapt(state[0], eps)
    env.close()
    data = RL2.trials(eps)
    with torch.no_grad():
        mu, h = algo.net.sequence(
            data["obs"],
            data["prev_action"],
            data["prev_reward"][..., None],
            data["prev_done"][..., None],
            torch.zeros(3, 8),
        )
    torch.testing.assert_close(state[0]["h"], h, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mu, data["actions"], rtol=1e-5, atol=1e-6)  # deterministic
    assert state[0]["prev_done"].eq(1).all() and state[0]["h"].abs().sum() > 0


def test_masked_steps_do_not_advance_the_state():
    _, algo = build(n_envs=2)
    s = algo.init_state(2)
    obs = np.array([[0.3, 0.1], [0.2, 0.2]], np.float32)
    _, s = algo.act(obs, None, s)
    step = {
        "actions": np.array([[2.0, -0.5], [0.1, 0.1]], np.float32),
        "rewards": np.array([-1.0, -2.0], np.float32),
        "mask": np.array([1.0, 0.0], np.float32),
    }
    s2 = algo.observe(s, step)
    torch.testing.assert_close(s2["h"][0], s["h_next"][0])
    torch.testing.assert_close(s2["h"][1], torch.zeros(8))
    torch.testing.assert_close(s2["prev_action"], torch.tensor([[1.0, -0.5], [0.0, 0.0]]))
    torch.testing.assert_close(s2["prev_reward"], torch.tensor([[-1.0], [0.0]]))


def _episodes(rewards: np.ndarray, mask: np.ndarray, value: np.ndarray) -> Episodes:
    n, t = rewards.shape
    z = np.zeros((n, t), np.float32)
    return Episodes(
        obs=np.zeros((n, t, 2), np.float32),
        actions=np.zeros((n, t, 2), np.float32),
        rewards=rewards.astype(np.float32),
        next_obs=np.zeros((n, t, 2), np.float32),
        dones=z,
        mask=mask.astype(np.float32),
        task=np.zeros((n, 2), np.float32),
        success=np.zeros(n, bool),
        extras={
            "logp": z,
            "value": value.astype(np.float32),
            "prev_action": np.zeros((n, t, 2), np.float32),
            "prev_reward": z,
            "prev_done": z,
        },
    )


def test_trials_compact_valid_steps_and_bootstrap_across_episode_boundaries():
    # Member 0's first episode ends after 2 of 3 steps; member 1 runs full episodes.
    e1 = _episodes(
        np.array([[1, 2, 99], [1, 1, 1]]), np.array([[1, 1, 0], [1, 1, 1]]), np.full((2, 3), 0.5)
    )
    e2 = _episodes(
        np.array([[3, 4, 5], [1, 1, 1]]), np.array([[1, 1, 1], [1, 1, 1]]), np.full((2, 3), 2.0)
    )
    data = RL2.trials([e1, e2])
    np.testing.assert_array_equal(data["rewards"][0], [1, 2, 3, 4, 5, 0])
    np.testing.assert_array_equal(data["mask"][0], [1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(data["done"][0], [0, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(data["done"][1], [0, 0, 0, 0, 0, 1])
    # GAE (gamma = lambda = 1): the return of member 0's first episode runs on into the
    # second one (no cut at the episode boundary), and stops at the end of the trial.
    values = data["value"]
    nxt = torch.cat([values[:, 1:], torch.zeros(2, 1)], 1)
    _, ret = gae(data["rewards"], values, nxt, data["done"], data["mask"], 1.0, 1.0)
    np.testing.assert_allclose(ret[0, :5], [15, 14, 12, 9, 5])
    np.testing.assert_allclose(ret[1], [6, 5, 4, 3, 2, 1])


def test_meta_test_protocol_runs_and_tasks_do_not_share_state():
    env, algo = build()
    algo.train_iteration(env)
    env.close()
    raw = meta_test(algo, algo.spec, "test", 2, seeds=(0,), num_envs=16, workers=0)
    assert raw["success"].shape == (1, 40, 3) and np.all(np.isfinite(raw["returns"]))
    whole = meta_test(algo, algo.spec, "test", 2, workers=0, deterministic=True)
    chunked = meta_test(algo, algo.spec, "test", 2, num_envs=16, workers=0, deterministic=True)
    np.testing.assert_allclose(whole["returns"], chunked["returns"], rtol=1e-5, atol=1e-5)
    # The carried hidden state changes behaviour from one episode to the next.
    assert not np.allclose(whole["returns"][..., 0], whole["returns"][..., 1])


def test_grasp_lift_trial_runs(tmp_path):
    from metagrasp.cli import main

    out = tmp_path / "rl2-grasp"
    args = [
        "train",
        "--algo",
        "rl2",
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
        "algo.trial_episodes=2",
        "--set",
        "algo.minibatches=1",
        "--set",
        "algo.epochs=1",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    assert (out / "checkpoints" / "last.pt").is_file()
