"""``run.device``: where the learner runs (policies/device.py).

This machine and CI have no GPU, so what runs here is the CPU side of the contract:
names are checked, a GPU that is not there is refused with the fix, algorithms without
a GPU learner are refused rather than silently kept on the CPU, the move keeps the
optimisers bound to the parameters they update (the bug a GPU run would show first),
and the CPU path computes exactly what it computed before the option existed. The GPU
path itself is measured where a GPU is lent (docs/SCALING.md says so).
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from metagrasp.cli import main
from metagrasp.errors import ConfigError
from metagrasp.policies import device as dev
from metagrasp.policies.config import check_device_name
from metagrasp.policies.runner import Runner, build_algorithm, env_spec, resolve_config
from metagrasp.policies.sac import _behaviour_policy
from metagrasp.policies.sampler import Rollout
from metagrasp.sim.registry import make_vector_env

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", ["cpu", "auto", "cuda", "cuda:0", "cuda:12"])
def test_device_names_accepted(name):
    check_device_name(name)


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:", "cuda:x", "mps", "", 0])
def test_device_names_refused_with_the_choices(name):
    with pytest.raises(ConfigError, match="'cpu', 'cuda', 'cuda:N'"):
        check_device_name(name)


def test_config_validates_the_device():
    with pytest.raises(ConfigError, match="run.device='gpu'"):
        resolve_config("sac", "point-nav", "quick", None, {"run": {"device": "gpu"}})
    assert resolve_config("sac", "point-nav", "quick", None, {})["run"]["device"] == "cpu"


def test_a_missing_gpu_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="sees no CUDA GPU.*run.device=cpu"):
        dev.resolve_device("cuda")
    assert dev.resolve_device("auto") == torch.device("cpu")
    assert dev.resolve_device("cpu") == torch.device("cpu")


def test_a_gpu_index_beyond_the_machine_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert dev.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert dev.resolve_device("auto") == torch.device("cuda")
    with pytest.raises(ConfigError, match="has 2 GPU"):
        dev.resolve_device("cuda:2")


def _algo(name: str, task: str = "point-nav"):
    resolved = resolve_config(name, task, "quick", None, {"run": {"workers": 0}})
    env = make_vector_env(task, 2, seed=0, workers=0)
    return build_algorithm(resolved, env_spec(env, task)), env


@pytest.mark.parametrize("name", ["cavia", "rl2", "pearl", "rma"])
def test_algorithms_without_a_gpu_learner_are_refused(name, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    # RMA is a PPO subclass: it must not inherit PPO's move (its adapter would stay behind).
    algo, env = _algo(name, "grasp-lift" if name == "rma" else "point-nav")
    env.close()
    with pytest.raises(ConfigError, match=f"'{name}' runs on the CPU only.*run.device=cpu"):
        dev.place_learner(algo, "cuda")
    # The CPU needs no move, whatever the algorithm.
    assert dev.place_learner(algo, "cpu") == torch.device("cpu")


def _bound(opt: torch.optim.Optimizer, nets: list[torch.nn.Module]) -> bool:
    held = [p for group in opt.param_groups for p in group["params"]]
    return [id(p) for p in held] == [id(p) for n in nets for p in n.parameters()]


def test_the_move_keeps_the_optimisers_on_the_moved_parameters():
    sac, env = _algo("sac")
    env.close()
    sac.to_device(torch.device("cpu"))
    assert sac.device == torch.device("cpu")
    assert _bound(sac.opt_actor, [sac.actor]) and _bound(sac.opt_q, [sac.q1, sac.q2])
    assert sac.opt_alpha.param_groups[0]["params"][0] is sac.log_alpha
    ppo, env = _algo("ppo")
    env.close()
    ppo.to_device(torch.device("cpu"))
    assert _bound(ppo.opt, [ppo.net]) and ppo.net.device == torch.device("cpu")


def _train(algo_name: str, moved: bool, iterations: int = 3) -> dict:
    algo, env = _algo(algo_name)
    if hasattr(algo.config, "warmup_steps"):
        algo.config.warmup_steps = 0  # SAC: update from the first iteration
    if moved:
        algo.to_device(torch.device("cpu"))
    try:
        for _ in range(iterations):
            algo.train_iteration(env)
    finally:
        env.close()
    return algo.state_dict()


def test_a_learner_moved_to_the_cpu_trains_bit_for_bit_as_before():
    plain, moved = _train("sac", False), _train("sac", True)
    for key in ("actor", "q1", "q2", "norm"):
        a, b = plain["nets"][key], moved["nets"][key]
        assert all(torch.equal(a[k], b[k]) for k in a), key
    assert torch.equal(plain["log_alpha"], moved["log_alpha"])
    assert plain["log_alpha"] != torch.log(torch.tensor(0.1))  # the temperature learned
    plain, moved = _train("ppo", False, 2), _train("ppo", True, 2)
    assert all(torch.equal(plain["net"][k], moved["net"][k]) for k in plain["net"])
    start, env = _algo("ppo")
    env.close()
    assert not torch.equal(start.net.state_dict()["actor.w0"], plain["net"]["actor.w0"])


def test_rollouts_sent_to_workers_hold_cpu_copies_only():
    sac, env = _algo("sac")
    env.close()
    rollout = Rollout(_behaviour_policy, sac)
    sent = pickle.loads(pickle.dumps(rollout)).actor
    assert sent.device == torch.device("cpu")
    assert sent.replay is None and sent.q1 is None  # the learner stays in the driver
    x = np.zeros((3, sac.spec.obs_dim), np.float32)
    assert np.array_equal(sent.act(x, None, None, True)[0], sac.act(x, None, None, True)[0])
    # CPU modules are shared, not copied, on the local path.
    assert dev.cpu_copy(sac).actor is sac.actor


def test_train_cli_names_the_device_and_saves_it(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--algo", "sac", "--task", "point-nav", "--preset", "quick"]
    argv += ["--set", "run.total_env_steps=400", "--set", "run.workers=0", "--no-progress"]
    assert main([*argv, "--out", str(out), "--device", "auto"]) == 0
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert f"learner on {want}" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["run"]["device"] == "auto"
    # --resume may move a run to another device, as to another sampler.
    more = ["--set", "run.total_env_steps=800"]
    assert (
        main(["train", "--resume", "--out", str(out), "--no-progress", "--device", "cpu", *more])
        == 0
    )
    assert json.loads((out / "config.json").read_text())["run"]["device"] == "cpu"
    assert main([*argv, "--out", str(tmp_path / "bad"), "--device", "tpu"]) == 2
    assert "run.device='tpu'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_runner_refuses_a_gpu_where_there_is_none(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    resolved = resolve_config(
        "sac", "point-nav", "quick", None, {"run": {"workers": 0, "device": "cuda"}}
    )
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        Runner(resolved, tmp_path / "run", progress_bar=False)
    assert not (tmp_path / "run" / "config.json").exists()
