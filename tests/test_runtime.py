"""Device-side bundle loader (#5): no torch/mujoco import, integrity and version checks,
bad observations and episodes, the act/explore/adapt/observe API, ``metagrasp inspect``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from metagrasp.adapt.integrity import PLACEHOLDER, SELF_HASH_KEY, seal
from metagrasp.adapt.runtime import (
    ActionError,
    BundleError,
    BundleInputError,
    load_bundle,
)
from metagrasp.cli import main
from metagrasp.export.exporter import export_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train(algo: str, out: Path) -> Path:
    args = ["train", "--algo", algo, "--task", "point-nav", "--preset", "quick"]
    args += ["--set", "run.total_env_steps=800", "--set", "run.workers=0"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """Exported CAVIA (adapting), PPO-oracle (task input) and SAC (no exploration head)."""
    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for algo in ("cavia", "ppo-oracle", "sac"):
        run = _train(algo, root / "runs" / algo)
        path = root / algo / "policy.onnx"
        export_run(run, path, random_inputs=50, real_episodes=0, log=lambda *a: None)
        out[algo] = path
    return out


@pytest.fixture
def cavia_copy(bundles, tmp_path) -> Path:
    """A private copy of the CAVIA bundle to damage."""
    src = bundles["cavia"].parent
    dst = tmp_path / "b"
    shutil.copytree(src, dst)
    return dst / "policy.onnx"


def test_device_process_never_imports_torch_or_mujoco(bundles):
    """Load, act, explore, adapt and inspect in a fresh interpreter without torch."""
    code = f"""
import sys, numpy as np
from metagrasp.adapt.runtime import load_bundle
b = load_bundle({str(bundles["cavia"])!r})
s = b.init_state()
a, s = b.act(np.zeros(b.obs_dim, np.float32), s)
rng = np.random.default_rng(0)
ep = {{"obs": [], "actions": [], "rewards": [], "next_obs": [], "dones": []}}
obs = np.zeros(2, np.float32)
for t in range(b.episode_length):
    act, sample, s = b.explore(obs, s, rng)
    nxt = obs + 0.1 * act
    for k, v in zip(ep, (obs, sample, -float(np.linalg.norm(nxt - 0.5)), nxt, 0.0)):
        ep[k].append(v)
    obs = nxt
s2 = b.adapt(s, [ep])
assert np.abs(s2["context"]).max() > 0, "adaptation did nothing"
from metagrasp.cli import main
assert main(["inspect", {str(bundles["cavia"])!r}]) == 0
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "mujoco", "dm_control"))
assert not bad, bad
print("ok")
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_act_single_and_batch_agree(bundles):
    b = load_bundle(bundles["cavia"])
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((7, 2)).astype(np.float32)
    state = b.init_state(7)
    batch, _ = b.act(obs, state)
    for i in range(7):
        one, _ = b.act(obs[i], {"context": state["context"][i : i + 1]})
        assert one.shape == (2,)
        np.testing.assert_allclose(one, batch[i], atol=1e-6)
    assert np.all(np.abs(batch) <= 1.0)


def test_explore_sample_and_clipped_action(bundles):
    b = load_bundle(bundles["cavia"])
    rng = np.random.default_rng(1)
    s = b.init_state()
    obs = np.array([3.0, -3.0], np.float32)
    action, sample, s2 = b.explore(obs, s, rng)
    assert s2 is s
    np.testing.assert_array_equal(action, np.clip(sample, -1, 1))
    mean, _ = b.act(obs, s)
    assert not np.allclose(sample, mean)  # it explores


def test_oracle_needs_its_task_vector(bundles):
    b = load_bundle(bundles["ppo-oracle"])
    assert b.task_names == ("goal_x", "goal_y")
    with pytest.raises(BundleInputError, match="oracle"):
        b.act(np.zeros(2))
    a, state = b.act(np.zeros(2), task=np.array([0.5, 0.5]))
    assert a.shape == (2,) and state is None
    assert b.adapt(None, [{"obs": np.zeros((3, 2))}]) is None  # does not adapt
    with pytest.raises(BundleInputError, match="no Gaussian exploration"):
        load_bundle(bundles["sac"]).explore(np.zeros(2), None, np.random.default_rng())


@pytest.mark.parametrize(
    "obs, match",
    [
        (np.zeros(3), "shape"),
        (np.zeros((2, 2, 2)), "shape"),
        (np.array([np.nan, 0.0]), r"NaN/inf in \['x'\]"),
        (np.array([0.0, np.inf]), r"NaN/inf in \['y'\]"),
    ],
)
def test_bad_observations_are_refused(bundles, obs, match):
    b = load_bundle(bundles["cavia"])
    with pytest.raises(BundleInputError, match=match):
        b.act(obs, b.init_state())


def test_missing_state_is_refused(bundles):
    b = load_bundle(bundles["cavia"])
    with pytest.raises(BundleInputError, match="init_state"):
        b.act(np.zeros(2))


def test_bad_episodes_are_refused(bundles):
    b = load_bundle(bundles["cavia"])
    s = b.init_state()
    t = b.episode_length
    good = {
        "obs": np.zeros((t, 2)),
        "actions": np.zeros((t, 2)),
        "rewards": np.zeros(t),
        "next_obs": np.zeros((t, 2)),
        "dones": np.zeros(t),
    }
    with pytest.raises(BundleInputError, match="at least one"):
        b.adapt(s, [])
    with pytest.raises(BundleInputError, match="lacks"):
        b.adapt(s, [{k: v for k, v in good.items() if k != "rewards"}])
    with pytest.raises(BundleInputError, match="at most"):
        b.adapt(s, [{k: np.concatenate([v, v]) for k, v in good.items()}])
    with pytest.raises(BundleInputError, match="NaN"):
        b.adapt(s, [{**good, "rewards": np.full(t, np.nan)}])
    with pytest.raises(BundleInputError, match="shape"):
        b.adapt(s, [{**good, "actions": np.zeros((t, 3))}])
    # A shorter episode is padded and masked: fine.
    short = {k: v[:5] for k, v in good.items()}
    assert b.adapt(s, [short, good])["context"].shape == (1, 8)


def test_observe_feeds_rewards_only_into_recurrent_state(bundles):
    b = load_bundle(bundles["cavia"])
    s = b.init_state()
    assert b.observe(s, 1.0, False) is s
    rl2_like = {"hidden": np.zeros((2, 4), np.float32), "prev_reward": np.zeros((2, 1))}
    out = b.observe(rl2_like, np.array([1.5, -2.0]), np.array([0, 1]))
    np.testing.assert_array_equal(out["prev_reward"][:, 0], [1.5, -2.0])
    assert out["hidden"] is rl2_like["hidden"]


def test_to_units(bundles):
    b = load_bundle(bundles["cavia"])
    np.testing.assert_allclose(b.to_units([1.0, -0.5]), [0.1, -0.05], rtol=1e-6)


# --- damaged bundles ----------------------------------------------------------------------


def test_missing_files(cavia_copy):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(cavia_copy.with_name("other.onnx"))
    cavia_copy.with_name("policy.adapt.onnx").unlink()
    with pytest.raises(BundleError, match="adapt graph of policy.onnx .* does not exist"):
        load_bundle(cavia_copy)


def test_truncated_policy_file(cavia_copy):
    data = cavia_copy.read_bytes()
    cavia_copy.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="truncated|no .* entry"):
        load_bundle(cavia_copy)


def test_tampered_policy_weights(cavia_copy):
    model = onnx.load(cavia_copy)
    init = model.graph.initializer[0]
    raw = bytearray(cavia_copy.read_bytes())
    at = raw.find(init.raw_data[:16]) if init.raw_data else len(raw) // 3
    raw[at] ^= 0x01  # one bit of one weight
    cavia_copy.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="integrity check"):
        load_bundle(cavia_copy)


def test_tampered_or_swapped_sibling(cavia_copy, bundles):
    adapt = cavia_copy.with_name("policy.adapt.onnx")
    raw = bytearray(adapt.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    adapt.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="does not match the SHA-256"):
        load_bundle(cavia_copy)


def _reseal(path: Path, **changes: object) -> None:
    """Rewrite metadata values and seal again (a well-formed file with other contents)."""
    model = onnx.load(path)
    for entry in model.metadata_props:
        key = entry.key.removeprefix("metagrasp.")
        if key in changes:
            entry.value = json.dumps(changes[key])
        if entry.key == SELF_HASH_KEY:
            entry.value = PLACEHOLDER.decode()
    path.write_bytes(seal(model.SerializeToString(), path))


def test_incompatible_format_version(cavia_copy):
    _reseal(cavia_copy, format_version=2)
    with pytest.raises(BundleError, match="format 2.*reads format 1"):
        load_bundle(cavia_copy)


def test_a_sibling_is_not_a_policy_file(cavia_copy):
    with pytest.raises(BundleError, match="no .* entry"):
        load_bundle(cavia_copy.with_name("policy.adapt.onnx"))


def test_non_finite_action_is_never_returned(cavia_copy):
    # A graph that really produces NaN (an inf context reaches the tanh MLP as NaN).
    b = load_bundle(cavia_copy)
    with pytest.raises(ActionError):
        b.act(np.zeros(2), {"context": np.full((1, 8), np.inf, np.float32)})


def test_inspect_cli_reports_damage(cavia_copy, capsys):
    raw = bytearray(cavia_copy.read_bytes())
    raw[100] ^= 0x01
    cavia_copy.write_bytes(bytes(raw))
    assert main(["inspect", str(cavia_copy)]) == 2
    assert "integrity check" in capsys.readouterr().err
