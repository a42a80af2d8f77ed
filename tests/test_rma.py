"""RMA: the history windows, the two training phases, and the calibrated latent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metagrasp.errors import ConfigError
from metagrasp.policies.collect import Episodes
from metagrasp.policies.rma import RMAConfig, windows
from metagrasp.policies.runner import build_algorithm, env_spec, resolve_config
from metagrasp.sim import make_vector_env

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N = 4


def make(teacher_steps: int, seed: int = 0, **algo):
    overrides = {
        "run": {"num_envs": N, "workers": 0, "seed": seed},
        "algo": {
            "hidden": [16, 16],
            "epochs": 2,
            "minibatches": 2,
            "history": 5,
            "adapter_hidden": [32],
            "teacher_steps": teacher_steps,
            **algo,
        },
    }
    resolved = resolve_config("rma", "point-nav", "quick", overrides=overrides)
    env = make_vector_env("point-nav", N, seed=seed, workers=0)
    return env, build_algorithm(resolved, env_spec(env, "point-nav"))


def test_windows_end_at_each_step_and_flag_the_padding():
    obs = torch.arange(2 * 6 * 3, dtype=torch.float32).reshape(2, 6, 3)
    w = windows(obs, 4)
    assert w.shape == (2, 6, 4, 4)
    for t in range(6):
        assert torch.equal(w[:, t, -1, :3], obs[:, t])  # window t ends with obs t
        valid = min(t + 1, 4)
        assert torch.equal(w[0, t, :, 3], torch.tensor([0.0] * (4 - valid) + [1.0] * valid))
        if valid < 4:
            assert torch.all(w[:, t, : 4 - valid, :3] == 0)
    assert torch.equal(w[1, 5, 0, :3], obs[1, 2])


def test_running_window_at_meta_test_equals_the_training_windows():
    env, algo = make(0)
    state = algo.init_state(N)
    obs_seq = np.random.default_rng(0).normal(size=(N, 7, algo.spec.obs_dim)).astype(np.float32)
    for t in range(7):
        _, state = algo.act(obs_seq[:, t], np.zeros((N, algo.spec.task_dim)), state)
    ref = windows(algo.net.obs_norm(torch.as_tensor(obs_seq)), algo.config.history)[:, -1]
    assert torch.allclose(state["window"], ref)
    env.close()


def test_teacher_phase_trains_policy_and_encoder_not_the_adapter():
    env, algo = make(teacher_steps=10**9)
    enc0 = [p.detach().clone() for p in algo.net.encoder.parameters()]
    ad0 = [p.detach().clone() for p in algo.adapter.parameters()]
    m = algo.train_iteration(env)
    assert m["phase"] == 1.0 and m["adapter_loss"] == 0.0
    assert any(
        not torch.equal(a, p) for a, p in zip(enc0, algo.net.encoder.parameters(), strict=True)
    )
    assert all(torch.equal(a, p) for a, p in zip(ad0, algo.adapter.parameters(), strict=True))
    env.close()


def test_student_phase_regresses_the_frozen_teacher_latent():
    env, algo = make(teacher_steps=0, adapter_epochs=20, replay_blocks=1)
    net0 = {k: v.clone() for k, v in algo.net.state_dict().items()}
    losses = [algo.train_iteration(env)["adapter_loss"] for _ in range(3)]
    assert algo.phase == 2
    # Teacher (policy, encoder, normalizers) frozen in phase 2.
    assert all(torch.equal(net0[k], v) for k, v in algo.net.state_dict().items())
    assert losses[-1] < losses[0], losses
    env.close()


def test_calibrated_latent_averages_the_second_half_of_valid_steps():
    env, algo = make(0)
    T, o = 8, algo.spec.obs_dim
    rng = np.random.default_rng(1)
    mask = np.ones((N, T), np.float32)
    mask[1, 4:] = 0.0  # member 1's episode lasted 4 steps
    ep = Episodes(
        obs=rng.normal(size=(N, T, o)).astype(np.float32),
        actions=np.zeros((N, T, 2), np.float32),
        rewards=np.zeros((N, T), np.float32),
        next_obs=np.zeros((N, T, o), np.float32),
        dones=np.zeros((N, T), np.float32),
        mask=mask,
        task=np.zeros((N, algo.spec.task_dim), np.float32),
        success=np.zeros(N, bool),
    )
    z = algo.calibrated_latent([ep])
    with torch.no_grad():
        per_step = algo.estimate(windows(algo.net.obs_norm(torch.as_tensor(ep.obs)), 5))
    assert torch.allclose(z[0], per_step[0, 4:].mean(0), atol=1e-6)
    assert torch.allclose(z[1], per_step[1, 2:4].mean(0), atol=1e-6)
    state = algo.adapt(algo.init_state(N), [ep])
    assert torch.equal(state["z"], z) and torch.all(state["window"] == 0)
    env.close()


def test_frozen_calibration_acts_with_the_stored_latent():
    env, algo = make(0, calibration="freeze")
    obs = np.zeros((N, algo.spec.obs_dim), np.float32)
    state = algo.init_state(N)
    state["z"] = torch.full((N, algo.config.latent_dim), 3.0)
    a1, _ = algo.act(obs, None, state, deterministic=True)
    expected, _, _ = algo.net.ac.sample(obs, state["z"], True)
    assert np.allclose(a1, expected)
    env.close()


@pytest.mark.parametrize(
    "field,value", [("calibration", "sometimes"), ("history", 0), ("teacher_steps", -1)]
)
def test_bad_rma_fields_are_refused(field, value):
    with pytest.raises(ConfigError, match=field):
        RMAConfig(**{field: value})


def test_teacher_mode_acts_from_the_privileged_latent_and_eval_can_select_it(tmp_path, capsys):
    from metagrasp.cli import main

    env, algo = make(0)
    obs = np.zeros((N, algo.spec.obs_dim), np.float32)
    tasks = np.stack([np.full(algo.spec.task_dim, i, np.float32) for i in range(N)])
    algo.config.act_with = "teacher"
    a, _ = algo.act(obs, tasks, algo.init_state(N), deterministic=True)
    assert not np.allclose(a[0], a[1])  # different tasks, different latents, same obs
    env.close()
    run = tmp_path / "rma"
    args = ["train", "--algo", "rma", "--task", "point-nav", "--preset", "quick", "--out"]
    assert (
        main(
            [
                *args,
                str(run),
                "--no-progress",
                "--set",
                "run.total_env_steps=400",
                "--set",
                "run.num_envs=4",
                "--set",
                "run.workers=0",
            ]
        )
        == 0
    )
    for mode in ("teacher", "student"):
        out = tmp_path / mode
        assert (
            main(
                [
                    "eval",
                    str(run),
                    "--episodes-per-task",
                    "1",
                    "--workers",
                    "0",
                    "--set",
                    f"algo.act_with={mode}",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        assert (out / "results.json").is_file()
    bad = ["eval", str(run), "--set", "algo.act_with=ghost", "--workers", "0"]
    assert main(bad) != 0
    assert "act_with='ghost'" in capsys.readouterr().err


def test_export_carries_the_history_policy_and_reward_free_calibration(tmp_path):
    """The bundle acts and calibrates as the algorithm does, from observations alone."""
    from metagrasp.adapt.runtime import load_bundle
    from metagrasp.cli import main
    from metagrasp.export import exporter
    from metagrasp.policies.runner import load_trained

    run = tmp_path / "rma"
    args = ["train", "--algo", "rma", "--task", "point-nav", "--preset", "quick"]
    args += ["--set", "run.total_env_steps=800", "--set", "algo.teacher_steps=400"]
    assert main([*args, "--set", "run.workers=0", "--out", str(run), "--no-progress"]) == 0
    out = tmp_path / "policy.onnx"
    report = exporter.export_run(run, out, random_inputs=1000, real_episodes=5, log=print)
    assert set(report.files) == {"policy", "adapt", "init"}
    bundle = load_bundle(out)
    assert bundle.reward_free and bundle.metadata["adaptation"]["kind"] == "history"
    algo, _, spec = load_trained(run)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(spec.max_steps, spec.obs_dim)).astype(np.float32)
    state, ref = bundle.init_state(), algo.init_state(1)
    for t in range(spec.max_steps):
        a, state = bundle.act(obs[t], state)
        b, ref = algo.act(obs[t][None], None, ref, deterministic=True)
        assert np.allclose(a, np.clip(b[0], -1, 1), atol=1e-5)
    # Calibration from observations only (no rewards, actions or dones given).
    state = bundle.adapt(state, [{"obs": obs[:13]}, {"obs": obs}])
    assert state["calibrated"][0, 0] == 1.0
    mask = np.zeros((1, spec.max_steps), np.float32)
    mask[0, :13] = 1.0
    eps = [
        Episodes(obs[None], obs[None, :, :2], mask * 0, obs[None], mask * 0, m, None, None)
        for m in (mask, np.ones_like(mask))
    ]
    eps[0].obs = np.where(mask[..., None] > 0, obs[None], 0.0).astype(np.float32)
    z = algo.calibrated_latent(eps)
    assert np.allclose(state["z"], z.numpy(), atol=1e-5)
