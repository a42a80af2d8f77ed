"""``run.device``: where the learner runs (policies/device.py).

This machine and CI have no GPU, so what runs here is the CPU side of the contract:
names are checked, a GPU that is not there is refused with the fix, an algorithm without
a move is refused rather than silently kept on the CPU, the move keeps the optimisers
bound to the parameters they update (the bug a GPU run would show first), and every
algorithm's CPU path computes exactly what it computed before the option existed. The
tests marked ``CUDA`` run where torch sees a GPU (none was lent so far; docs/SCALING.md).
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
from metagrasp.policies.base import ALGORITHMS, algorithms_for
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


ALGOS = [(name, "point-nav") for name in algorithms_for("point-nav")] + [
    ("sac-grip", "grasp-lift"),
    ("sac-grip-dr", "grasp-lift"),
]
"""Every registered algorithm, on a family it has presets for."""
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU here")


def test_every_registered_algorithm_is_covered():
    assert sorted(name for name, _ in ALGOS) == sorted(ALGORITHMS)


def _algo(name: str, task: str = "point-nav"):
    resolved = resolve_config(name, task, "quick", None, {"run": {"workers": 0}})
    env = make_vector_env(task, 2, seed=0, workers=0)
    return build_algorithm(resolved, env_spec(env, task)), env


class _CPUOnly:
    """An algorithm as a third party might register one: no ``to_device``."""

    name = "cpu-only"


def test_an_algorithm_without_a_move_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="'cpu-only' runs on the CPU only.*run.device=cpu"):
        dev.place_learner(_CPUOnly(), "cuda")
    # The CPU needs no move, whatever the algorithm.
    assert dev.place_learner(_CPUOnly(), "cpu") == torch.device("cpu")


def _bound(opt: torch.optim.Optimizer, nets: list) -> bool:
    held = [p for group in opt.param_groups for p in group["params"]]
    want = [p for n in nets for p in (n.parameters() if isinstance(n, torch.nn.Module) else [n])]
    return [id(p) for p in held] == [id(p) for p in want]


def test_the_move_keeps_the_optimisers_on_the_moved_parameters():
    sac, env = _algo("sac")
    env.close()
    sac.to_device(torch.device("cpu"))
    assert sac.device == torch.device("cpu")
    assert _bound(sac.opt_actor, [sac.actor]) and _bound(sac.opt_q, [sac.q1, sac.q2])
    assert _bound(sac.opt_alpha, [sac.log_alpha])
    cavia, env = _algo("cavia")
    env.close()
    cavia.to_device(torch.device("cpu"))
    assert _bound(cavia.opt, [cavia.net, cavia.inner_lr])
    pearl, env = _algo("pearl")
    env.close()
    pearl.to_device(torch.device("cpu"))
    assert _bound(pearl.opt_alpha, [pearl.log_alpha]) and _bound(pearl.opt_q, [pearl.q1, pearl.q2])
    rma, env = _algo("rma")
    env.close()
    rma.to_device(torch.device("cpu"))
    assert _bound(rma.opt, [rma.net]) and _bound(rma.adapter_opt, [rma.adapter])


def _train(name: str, task: str, device: str | None, iterations: int = 2) -> dict:
    algo, env = _algo(name, task)
    if hasattr(algo.config, "warmup_steps"):
        algo.config.warmup_steps = 0  # off-policy: update from the first iteration
    if hasattr(algo.config, "teacher_steps") and name == "rma":
        algo.config.teacher_steps = 1  # RMA: the student phase (its own update) from the second
    if device is not None:
        algo.to_device(torch.device(device))
    try:
        for _ in range(iterations):
            algo.train_iteration(env)
    finally:
        env.close()
    return algo.state_dict()


def _tensors(tree, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a (nested) state dict, by path."""
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_tensors(v, f"{prefix}/{k}"))
        return out
    return {}


@pytest.mark.parametrize(("name", "task"), ALGOS)
def test_a_learner_moved_to_the_cpu_trains_bit_for_bit_as_before(name, task):
    start = _tensors(_algo(name, task)[0].state_dict())
    plain, moved = _tensors(_train(name, task, None)), _tensors(_train(name, task, "cpu"))
    assert plain.keys() == moved.keys()
    for key, value in plain.items():
        assert torch.equal(value, moved[key]), key
    # ... and it did learn: the first network's weights moved.
    learned = [k for k in start if k.endswith("weight") or "/w" in k]
    assert learned and any(not torch.equal(start[k], plain[k]) for k in learned)


@CUDA
@pytest.mark.parametrize(("name", "task"), ALGOS)
def test_a_gpu_learner_trains_as_the_cpu_one(name, task):
    """Same random streams, so after two iterations the networks differ by float sums only."""
    cpu, gpu = _tensors(_train(name, task, None)), _tensors(_train(name, task, "cuda"))
    for key, value in cpu.items():
        if value.is_floating_point():
            got = gpu[key].cpu()
            assert torch.allclose(value, got, rtol=1e-3, atol=1e-3), key


@CUDA
def test_a_run_trained_on_a_gpu_resumes_and_evaluates_on_the_cpu(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--algo", "sac-grip", "--task", "grasp-lift", "--preset", "quick"]
    argv += ["--set", "run.total_env_steps=400", "--set", "run.workers=0", "--no-progress"]
    assert main([*argv, "--out", str(out), "--device", "cuda"]) == 0
    assert "learner on cuda" in capsys.readouterr().err
    more = ["--set", "run.total_env_steps=800", "--device", "cpu"]
    assert main(["train", "--resume", "--out", str(out), "--no-progress", *more]) == 0
    assert main(["eval", str(out), "--episodes-per-task", "1", "--workers", "0"]) == 0


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
