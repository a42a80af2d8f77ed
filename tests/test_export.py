"""ONNX export (#5): every exportable algorithm, parity with the training code, the CAVIA
inner loop against autograd at grasp sizes, metadata, fp16/int8 success check, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from metagrasp.adapt.runtime import load_bundle
from metagrasp.cli import main
from metagrasp.export import exporter
from metagrasp.export.parity import TOLERANCE, graph_parity
from metagrasp.export.writer import OPSET, ExportError
from metagrasp.policies.base import EnvSpec
from metagrasp.policies.cavia import CAVIA, CAVIAConfig
from metagrasp.policies.collect import Episodes
from metagrasp.policies.networks import gae as torch_gae
from metagrasp.policies.ppo import PPO, PPOConfig
from tests.bundles import write_plan

EXPORTABLE = ("ppo", "ppo-oracle", "sac", "sac-oracle", "cavia", "pearl", "rl2")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def train_tiny(algo: str, out: Path) -> Path:
    args = ["train", "--algo", algo, "--task", "point-nav", "--preset", "quick"]
    args += ["--set", "run.total_env_steps=800", "--set", "run.workers=0"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("export-runs")
    return {a: train_tiny(a, root / a) for a in EXPORTABLE}


@pytest.mark.parametrize("algo", EXPORTABLE)
def test_export_checks_and_metadata(runs, tmp_path, algo):
    out = tmp_path / "policy.onnx"
    report = exporter.export_run(
        runs[algo], out, random_inputs=1000, real_episodes=5, log=lambda *a: None
    )
    files = report.files
    assert set(files) >= {"policy"}
    for path in files.values():
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version == OPSET
    checks = report.checks
    for res in checks["random"].values():
        assert res["inputs"] == 1000 and res["max_abs_diff"] <= TOLERANCE
    assert checks["rollout"]["observations"] >= 100
    assert checks["rollout"]["max_abs_diff"] <= TOLERANCE
    meta = load_bundle(out).metadata
    assert meta["format_version"] == 1 and meta["algorithm"] == algo
    assert meta["obs_names"] == ["x", "y"] and meta["action_names"] == ["vx", "vy"]
    assert meta["config_hash"] in meta["run_id"]
    assert meta["episode_length"] == 20
    assert set(meta["graphs"]) == set(files)
    assert (meta["task_names"] != []) == algo.endswith("oracle")
    if algo == "cavia":
        assert set(files) == {"policy", "adapt", "critic", "init"}
        settings = meta["adaptation"]["settings"]
        assert settings["inner_steps"] == 1 and len(settings["inner_lr"]) == 8
        assert meta["adaptation"]["reward_free"] is False


def grasp_cavia(seed: int = 0) -> CAVIA:
    """CAVIA at grasp-lift sizes, weights perturbed so every gradient term is exercised."""
    from metagrasp.actions import EE_ACTION_NAMES, OBS_NAMES

    spec = EnvSpec("grasp-lift", 33, 6, 11, 100, OBS_NAMES, EE_ACTION_NAMES)
    algo = CAVIA(CAVIAConfig(inner_steps=2), spec, seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in algo.net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
        algo.inner_lr.copy_(torch.linspace(0.5, 2.0, 8))
        algo.net.norm.update(torch.randn(500, 33, generator=gen) * 0.3 + 0.1)
    return algo


def synthetic_episodes(algo: CAVIA, k: int, rng: np.random.Generator) -> list[Episodes]:
    """k single-member episodes; the second one terminates early (padding, a done flag)."""
    t, o, a = algo.spec.max_steps, algo.spec.obs_dim, algo.spec.act_dim
    eps = []
    for i in range(k):
        length = t if i != 1 else 37
        mask = (np.arange(t) < length).astype(np.float32)[None]
        dones = np.zeros((1, t), np.float32)
        if length < t:
            dones[0, length - 1] = 1.0
        x = (0.1 + 0.3 * rng.standard_normal((1, t + 1, o))).astype(np.float32)
        eps.append(
            Episodes(
                obs=x[:, :-1],
                actions=rng.uniform(-1.3, 1.3, (1, t, a)).astype(np.float32),
                rewards=(rng.standard_normal((1, t)) * mask).astype(np.float32),
                next_obs=x[:, 1:],
                dones=dones,
                mask=mask,
                task=np.zeros((1, 11), np.float32),
                success=np.zeros(1, bool),
            )
        )
    return eps


def test_parity_is_relative_beyond_one_so_a_critic_in_the_hundreds_exports():
    """A trained grasp-lift critic predicts returns in the hundreds, where float32 resolves
    ~3e-5; the check bounds the difference relative to the value there, absolute within
    +-1 (actions keep the absolute bound)."""
    from metagrasp.export.parity import scaled_diff

    want = np.array([0.5, -0.9, 300.0, -250.0])
    assert scaled_diff(want + [2e-6, 0, 0, 0], want) == pytest.approx(2e-6)  # absolute
    assert scaled_diff(want + [0, 0, 3e-4, 0], want) == pytest.approx(1e-6)  # relative
    assert scaled_diff(np.zeros(0), np.zeros(0)) == 0.0
    algo = grasp_cavia()
    with torch.no_grad():
        algo.net.critic[-1].bias.fill_(300.0)
    graph = algo.export_modules().graph("critic")
    res = graph_parity(graph, exporter.trace(graph), n=1000)
    feed = graph.sample(8, np.random.default_rng(0))
    values = graph.module(*[torch.as_tensor(feed[k]) for k in graph.inputs])
    values = values[0] if isinstance(values, tuple) else values
    assert float(values.abs().min()) > 100  # really in the hundreds
    assert res["max_scaled_diff"] <= TOLERANCE
    assert res["max_scaled_diff"] <= res["max_abs_diff"] / 100


def test_cavia_adapt_graph_matches_autograd_at_grasp_sizes():
    """The traced explicit backward equals training's autograd inner loop (2 steps)."""
    plan = grasp_cavia().export_modules()
    graph = plan.graph("adapt")
    res = graph_parity(graph, exporter.trace(graph), n=200)
    assert res["max_abs_diff"] <= TOLERANCE
    # Not vacuous: the update moves the context by far more than the tolerance.
    feed = graph.sample(4, np.random.default_rng(1))
    ctx = graph.reference(*[torch.as_tensor(feed[k]) for k in graph.inputs])[0]
    assert float((ctx - torch.as_tensor(feed["context"])).abs().max()) > 1e-2


def test_runtime_adapt_equals_training_adapt(tmp_path):
    """Device adapt (critic graph + numpy GAE + adapt graph) == CAVIA.adapt, 3 episodes."""
    algo = grasp_cavia(seed=3)
    bundle = load_bundle(write_plan(algo.export_modules(), algo.spec, tmp_path / "p.onnx"))
    rng = np.random.default_rng(0)
    eps = synthetic_episodes(algo, 3, rng)
    want = algo.adapt(algo.init_state(1), eps).numpy()
    fields = ("obs", "actions", "rewards", "next_obs", "dones")
    # The device records unpadded episodes: cut each to its valid steps.
    dev = [{f: getattr(e, f)[0, : int(e.mask.sum())] for f in fields} for e in eps]
    got = bundle.adapt(bundle.init_state(), dev)["context"]
    assert np.abs(got - want).max() <= TOLERANCE
    assert np.abs(want).max() > 1e-2  # the context moved
    obs = eps[0].obs[0, :50]
    a_dev, _ = bundle.act(obs, {"context": np.repeat(got, 50, 0)})
    a_ref, _ = algo.act(obs, None, torch.as_tensor(np.repeat(want, 50, 0)), True)
    assert np.abs(a_dev - np.clip(a_ref, -1, 1)).max() <= TOLERANCE


def test_numpy_gae_is_training_gae():
    from metagrasp.adapt.runtime import gae

    rng = np.random.default_rng(0)
    m, t = 6, 30
    lengths = rng.integers(1, t + 1, m)
    mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
    dones = np.zeros((m, t), np.float32)
    dones[np.arange(m), lengths - 1] = rng.integers(0, 2, m)
    r, v, nv = (rng.standard_normal((m, t)).astype(np.float32) for _ in range(3))
    got = gae(r, v, nv, dones, mask, 0.99, 0.95)
    want, _ = torch_gae(*(torch.as_tensor(x) for x in (r, v, nv, dones, mask)), 0.99, 0.95)
    assert np.abs(got - want.numpy()).max() <= 1e-6


def test_quantized_export_reports_success_change(runs, tmp_path):
    out = tmp_path / "q.onnx"
    rep = exporter.export_run(
        runs["ppo"],
        out,
        precision="fp16",
        random_inputs=100,
        real_episodes=0,
        quality_seeds=(0,),
        log=lambda *a: None,
    )
    q = rep.checks["quality"]
    assert q["precision"] == "fp16" and q["episodes"] == 40
    assert abs(q["success_change"]) <= exporter.MAX_SUCCESS_DROP
    assert load_bundle(out).metadata["precision"] == "fp16"
    assert q["max_abs_action_diff_random"] < 1e-2  # fp16 rounding, not garbage


def test_quantized_export_refuses_beyond_the_limit(runs, tmp_path, monkeypatch):
    # A limit below any possible change (even 0): the refusal path must write nothing.
    monkeypatch.setattr(exporter, "MAX_SUCCESS_DROP", -1.0)
    out = tmp_path / "q.onnx"
    with pytest.raises(ExportError, match="refusing"):
        exporter.export_run(
            runs["ppo"],
            out,
            precision="int8",
            random_inputs=100,
            real_episodes=0,
            quality_seeds=(0,),
            log=lambda *a: None,
        )
    assert not out.exists() and not list(tmp_path.iterdir())


def test_subclass_that_acts_differently_needs_its_own_export():
    class Tweaked(PPO):
        name = "ppo"

        def act(self, obs, task, state, deterministic=False):
            return super().act(obs, task, state, deterministic)

    spec = EnvSpec("point-nav", 2, 2, 2, 20, ("x", "y"), ("vx", "vy"))
    with pytest.raises(ExportError, match="needs its own export_modules"):
        exporter._plan(Tweaked(PPOConfig(hidden=(8,)), spec))


def test_cli_export_and_inspect(runs, tmp_path, capsys):
    out = tmp_path / "b" / "policy.onnx"
    assert main(["export", str(runs["cavia"]), "-o", str(out), "--real-episodes", "2"]) == 0
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "algorithm   cavia" in text and "next.context" in text and "policy.adapt.onnx" in text
    assert main(["inspect", str(out), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["adaptation"]["kind"] == "gradient"
    assert main(["export", str(tmp_path / "nope"), "-o", str(out)]) == 2
    assert main(["export", str(runs["ppo"]), "-o", str(tmp_path / "x.pt")]) == 2
    assert "must end in .onnx" in capsys.readouterr().err


def test_cli_bench_policy(runs, tmp_path, capsys):
    out = tmp_path / "policy.onnx"
    assert main(["export", str(runs["cavia"]), "-o", str(out), "--real-episodes", "0"]) == 0
    js = tmp_path / "bench.json"
    args = ["bench-policy", str(out), "--calls", "200", "--adapt-calls", "3", "--json", str(js)]
    assert main(args) == 0
    res = json.loads(js.read_text())
    assert {"onnxruntime", "torch_module", "torch_algo_act"} <= set(res["act"])
    assert {"onnxruntime", "torch_algo_adapt"} <= set(res["adapt"])
    assert res["act"]["onnxruntime"]["p50_us"] > 0


def test_grasp_metadata_rebuilds_the_device_action_map():
    """What the device needs to turn actions into servo targets is in the metadata."""
    from metagrasp.actions import EE_ACTION_NAMES, OBS_NAMES, ActionMapConfig
    from metagrasp.export.metadata import env_facts

    facts = env_facts(EnvSpec("grasp-lift", 33, 6, 11, 100, OBS_NAMES, EE_ACTION_NAMES))
    cfg = ActionMapConfig(**json.loads(json.dumps(facts["env"]["action_map"])))
    assert cfg.action_mode == "ee" and facts["control_hz"] == cfg.control_hz == 25.0
    assert facts["episode_length"] == 100 and len(facts["obs_units"]) == 33
    assert facts["joint_names"][-1] == "gripper" and len(facts["joint_lower"]) == 6
    assert facts["action_scale"][0] == cfg.max_tcp_delta
    assert facts["obs_units"][0] == "rad" and facts["obs_units"][-1] == "m"
