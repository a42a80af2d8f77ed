"""sac-grip (policies/grip_search.py): the grip command, the search, the CLI on grasp-lift.

The generic per-algorithm tests run on point-nav, which sac-grip refuses (its command is
a grip force); its reproducibility, checkpoints and CLI smoke run here on grasp-lift.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from metagrasp.cli import main
from metagrasp.errors import ConfigError
from metagrasp.grip_search import next_grip
from metagrasp.policies.collect import Episodes
from metagrasp.policies.grip_search import encode_grip
from metagrasp.policies.runner import (
    build_algorithm,
    env_spec,
    load_checkpoint,
    resolve_config,
    save_checkpoint,
)
from metagrasp.sim import make_vector_env
from metagrasp.sim.registry import family_split_tasks
from metagrasp.sim.scripted import privileged_grip

TINY = {"hidden": [16], "warmup_steps": 100, "batch_size": 8, "demo_episodes": 2}


def tiny(seed: int = 0, **algo) -> tuple:
    """(env, sac-grip, resolved config) on grasp-lift with two members."""
    overrides = {"run": {"num_envs": 2, "workers": 0, "seed": seed}, "algo": {**TINY, **algo}}
    resolved = resolve_config("sac-grip", "grasp-lift", "quick", overrides=overrides)
    env = make_vector_env("grasp-lift", 2, seed=seed, workers=0)
    return env, build_algorithm(resolved, env_spec(env, "grasp-lift")), resolved


def outcomes(
    success: list[bool], crushed: list[bool] | None, gripped: list[bool] | None = None
) -> Episodes:
    """An episode block that carries only the outcomes the search reads (one step, the
    object where it started: never raised)."""
    from metagrasp.actions import OBS_NAMES

    n = len(success)
    z, a = np.zeros((n, 1, len(OBS_NAMES)), np.float32), np.zeros((n, 1, 6), np.float32)
    return Episodes(
        z, a, z[..., 0], z, z[..., 0], z[..., 0] + 1, np.zeros((n, 11), np.float32),
        np.array(success), crushed=None if crushed is None else np.array(crushed),
        gripped=np.ones(n, bool) if gripped is None else np.array(gripped),
    )  # fmt: skip


def test_the_command_is_the_privileged_grip_of_each_task_log_scaled():
    assert encode_grip(np.array([0.5, math.sqrt(10.0), 20.0]))[:, 0] == pytest.approx([-1, 0, 1])
    env, algo, _ = tiny()
    env.close()
    tasks = family_split_tasks("grasp-lift", "test")
    vectors = np.stack([t.privileged_vector() for t in tasks])
    obs = np.zeros((len(tasks), algo.spec.obs_dim), np.float32)
    inputs = algo._inputs(obs, vectors)
    assert inputs.shape == (len(tasks), algo.spec.obs_dim + 1)
    want = encode_grip(np.array([privileged_grip(t) for t in tasks]))[:, 0]
    np.testing.assert_allclose(inputs[:, -1], want, rtol=1e-5, atol=1e-6)


def test_adapt_lowers_after_a_crush_raises_after_a_drop_and_keeps_a_lift():
    env, algo, _ = tiny()
    env.close()
    state = algo.init_state(3)
    assert state["grip"].tolist() == [4.0, 4.0, 4.0]  # the best single grip first
    first = outcomes([False, False, True], [True, False, False])
    state = algo.adapt(state, [first])
    assert state["grip"] == pytest.approx([math.sqrt(0.5 * 4), math.sqrt(4 * 20), 4.0])
    second = outcomes([False, True, True], [False, False, False])
    seen = []  # the public hook sees every verdict the search reads, in order
    algo.judgement_observer = lambda ep, lifted, crushed: seen.append((ep, lifted, crushed))
    state = algo.adapt(state, [first, second])
    assert seen[0][0] is first and seen[1][0] is second
    assert seen[1][1].tolist() == [False, True, True] and not seen[1][2].any()
    # crushed at 4 N then dropped at 1.41 N: between them; lifted at 8.9 N: kept.
    assert state["grip"] == pytest.approx([math.sqrt(math.sqrt(2.0) * 4), math.sqrt(80), 4.0])
    assert state["grip"][0] == pytest.approx(
        next_grip([(4.0, False, True), (math.sqrt(2.0), False, False)], 4.0, 0.5, 20.0)
    )
    with pytest.raises(ConfigError, match="crush outcomes"):
        algo.adapt(algo.init_state(3), [outcomes([False] * 3, None)])
    with pytest.raises(ValueError, match="2 episodes for 1 grips"):
        algo.adapt(algo.init_state(3), [first, second])


def test_judge_device_searches_on_what_the_robot_sees_not_the_sims_flags():
    """``algo.judge=device``: lifted and crushed from the recorded observations
    (``DeviceReward`` with ``detect_collapse``), as ``calibrate --detect-crush`` does."""
    from metagrasp.sim.grasp_env import EnvConfig, GraspEnv
    from metagrasp.sim.scripted import ScriptedGrasp, record_episode
    from metagrasp.sim.tasks import TaskParams

    box = TaskParams(shape="box", size=(0.018, 0.03, 0.025), mass=0.1, crush_limit=5.0)
    env = GraspEnv(config=EnvConfig(task="grasp-lift"))
    eps = []
    for grip in (8.0, 3.0):  # crushes it (still lifted); lifts it intact
        ep, info = record_episode(
            env, lambda g=grip: ScriptedGrasp(box, grip_force=g, config=env.config), seed=0,
            options={"task": box, "object_pose": (0.2, 0.0, 0.0)},
        )  # fmt: skip
        assert info["crushed"] == (grip == 8.0) and info["success"] == (grip == 3.0)
        eps.append(ep)
    env.close()
    fields = ("obs", "actions", "rewards", "next_obs", "dones")
    block = Episodes(
        *(np.stack([e[k] for e in eps]) for k in fields),
        np.ones((2, len(eps[0]["obs"])), np.float32), np.zeros((2, 11), np.float32),
        np.array([False, True]), crushed=np.array([True, False]), gripped=np.ones(2, bool),
    )  # fmt: skip
    _, algo, _ = tiny(judge="device")
    lifted, crushed, raised = algo._judge(block)
    assert lifted.tolist() == [False, True] and crushed.tolist() == [True, False]
    assert raised.tolist() == [True, True]  # both went 5 cm up (the first one crushed)
    from metagrasp.policies.grip_search import raised_flags

    assert raised_flags(block).tolist() == raised.tolist()  # the sim judge's, the same
    # The sim's flags say the same here, so both judges search alike; a blind device
    # would have called the crushed lift a success and kept 4 N.
    state = algo.adapt(algo.init_state(2), [block])
    assert state["grip"] == pytest.approx([math.sqrt(0.5 * 4), 4.0])
    with pytest.raises(ConfigError, match="algo.judge"):
        tiny(judge="operator")


def test_retry_misses_keeps_the_grip_after_an_episode_that_never_squeezed():
    assert next_grip([(4.0, False, False, False)], 4.0, 0.5, 20.0) == 4.0  # a miss
    assert next_grip([(4.0, False, False, True)], 4.0, 0.5, 20.0) == pytest.approx(80**0.5)
    assert next_grip([(4.0, False, True, False)], 4.0, 0.5, 20.0) == pytest.approx(2**0.5)
    missed_then_dropped = [(4.0, False, False, False), (4.0, False, False, True)]
    assert next_grip(missed_then_dropped, 4.0, 0.5, 20.0) == pytest.approx(80**0.5)
    for retry, want in ((False, math.sqrt(80.0)), (True, 4.0)):
        env, algo, _ = tiny(retry_misses=retry)
        env.close()
        state = algo.adapt(algo.init_state(1), [outcomes([False], [False], [False])])
        assert state["grip"] == pytest.approx([want])


def test_acting_with_a_searched_grip_or_the_oracle_grip():
    """The state's grip replaces the privileged one; ``act_with=oracle`` keeps no state."""
    env, algo, _ = tiny()
    obs, info = env.reset(seed=0)
    env.close()
    task = np.asarray(info["task"], np.float32)
    grips = np.array([privileged_grip_of(v) for v in task])
    a_oracle, _ = algo.act(obs, task, None, deterministic=True)
    a_same, _ = algo.act(obs, task, {"grip": grips, "tried": []}, deterministic=True)
    np.testing.assert_allclose(a_same, a_oracle, atol=1e-6)
    algo.actor.body[0].weight.data[:, -1] = 5.0  # make the command matter
    a_low, _ = algo.act(obs, task, {"grip": np.full(2, 0.5), "tried": []}, deterministic=True)
    a_high, _ = algo.act(obs, task, {"grip": np.full(2, 20.0), "tried": []}, deterministic=True)
    assert not np.allclose(a_low, a_high)
    _, oracle, _ = tiny(act_with="oracle")
    assert oracle.init_state(2) is None


def privileged_grip_of(vector: np.ndarray) -> float:
    from metagrasp.sim.scripted import privileged_grips

    return float(privileged_grips(vector[None])[0])


def test_bad_settings_and_other_families_are_refused():
    with pytest.raises(ConfigError, match="no 'quick' preset for 'point-nav'"):
        resolve_config("sac-grip", "point-nav", "quick")
    for bad, match in (
        ({"act_with": "teacher"}, "act_with"),
        ({"start_grip_n": 40.0}, "outside the gripper"),
        ({"init_from": "runs/x"}, "init_from is for sac-oracle"),
    ):
        with pytest.raises(ConfigError, match=match):
            resolve_config("sac-grip", "grasp-lift", "quick", overrides={"algo": bad})


def test_seeded_training_reproduces_and_a_checkpoint_resumes_exactly(tmp_path):
    env_a, a, resolved = tiny(seed=3)
    env_b, b, _ = tiny(seed=3)
    m_a, m_b = a.train_iteration(env_a), b.train_iteration(env_b)
    assert m_a == m_b and m_a["updates"] > 0
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, a, resolved, {"iteration": 1, "env_steps": a.env_steps, "wall_s": 1})
    env_c, c, _ = tiny(seed=3)  # a resumed run: same config, its own fresh weights
    env_c.close()
    with torch.no_grad():
        c.actor.body[0].weight.add_(1.0)
    c.load_state_dict(load_checkpoint(path, expected_algo="sac-grip")["state"])
    for x, y in zip(a.actor.parameters(), c.actor.parameters(), strict=True):
        assert torch.equal(x, y)
    # The demonstrations are recorded again on resume (a pure function of the seed), and
    # the next iteration is the same as the uninterrupted run's.
    assert c.demos is None
    m_c, m_b = c.train_iteration(env_a), b.train_iteration(env_b)
    assert m_c == m_b
    assert np.array_equal(c.demos.data["actions"], a.demos.data["actions"])
    env_a.close()
    env_b.close()


def test_cli_trains_evaluates_and_exports_a_bundle_that_searches_the_grip(tmp_path):
    run = tmp_path / "run"
    args = ["train", "--algo", "sac-grip", "--task", "grasp-lift", "--preset", "quick"]
    args += ["--set", "run.total_env_steps=400", "--set", "run.num_envs=2"]
    args += ["--set", "run.workers=0", "--set", "algo.demo_episodes=2"]
    args += ["--set", "algo.warmup_steps=200", "--out", str(run)]
    assert main(args) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["algo"]["bc_weight"] == 0.4 and config["algo"]["act_with"] == "search"
    assert main(["eval", str(run), "--split", "test", "--episodes-per-task", "2"]) == 0
    res = json.loads((run / "eval-test" / "results.json").read_text())
    assert [r["k"] for r in res["per_k"]] == [0, 1, 2]
    assert res["settings"] == {}
    # As an --oracle reference the run acts with the privileged grip; as --dr, as trained.
    ref = ["--dr", str(run), "--oracle", str(run), "--out", str(tmp_path / "ref")]
    assert main(["eval", str(run), "--split", "test", "--episodes-per-task", "0", *ref]) == 0
    res = json.loads((tmp_path / "ref" / "results.json").read_text())
    assert res["reference_oracle"]["settings"] == {"act_with": "oracle"}
    assert res["reference_dr"]["settings"] == {} and res["settings"] == {}
    # The export checks the graph against act_at on random inputs (grips beyond the
    # gripper's range included) and the runtime against act/adapt on 4 sim episodes.
    assert main(["export", str(run), "-o", str(tmp_path / "b" / "policy.onnx"),
                 "--real-episodes", "4"]) == 0  # fmt: skip
    from metagrasp.adapt.runtime import BundleInputError, load_bundle

    bundle = load_bundle(tmp_path / "b" / "policy.onnx")
    checks = bundle.metadata["checks"]
    assert checks["random"]["policy"]["max_abs_diff"] < 1e-5
    assert checks["rollout"]["max_abs_diff"] < 1e-5
    assert bundle.adapts and bundle.reward_free and bundle.metadata["exploration"] == "none"
    np.testing.assert_array_equal(bundle.init_state()["grip"], [[4.0]])
    # The device search is the algorithm's, on the same outcomes (two members).
    env, algo, _ = tiny()
    env.close()
    flags = [([False, True], [True, False]), ([False, False], [False, False])]
    eps = [
        {"lifted": np.array(lf), "crushed": np.array(cr), "raised": np.zeros(2, bool)}
        for lf, cr in flags
    ]
    state = algo.init_state(2)
    for i in range(len(flags)):
        state = algo.adapt(state, [outcomes(*f) for f in flags[: i + 1]])
        got = bundle.adapt(bundle.init_state(2), eps[: i + 1])["grip"][:, 0]
        np.testing.assert_allclose(got, state["grip"], rtol=1e-6)
        if i == 0:  # lifted: kept; crushed: less
            assert state["grip"][1] == 4.0 and state["grip"][0] < 4.0
    # Member 1 dropped at the 4 N that had lifted it: every outcome counts, so up.
    assert state["grip"][1] == pytest.approx(math.sqrt(4.0 * 20.0))
    # The grip is what the bundle squeezes with: every g > 0 is the state's force.
    from metagrasp.actions import grip_action

    obs = np.random.default_rng(0).normal(size=(200, bundle.obs_dim)).astype(np.float32)
    for grip in (2.0, 20.0, 40.0):  # 40 N is beyond the gripper: clamped to 20
        g, _ = bundle.act(obs, {"grip": np.full((200, 1), grip, np.float32)})
        squeeze = g[:, -1] > 0
        assert 0 < squeeze.sum() < 200  # both signs: opening passes through unchanged
        want = grip_action(min(grip, 20.0) / 20.0)
        np.testing.assert_allclose(g[squeeze, -1], want, rtol=1e-6)
    # The prior search exports too (the training objects' windows in the bundle), and
    # the device's choice is the algorithm's.
    prior = tmp_path / "p" / "policy.onnx"
    assert main(["export", str(run), "-o", str(prior), "--real-episodes", "4",
                 "--set", "algo.search_rule=prior"]) == 0  # fmt: skip
    pb = load_bundle(prior)
    assert pb.adaptation["settings"]["rule"] == "prior"
    assert len(pb.adaptation["settings"]["windows"]) == 1000
    env, algo, _ = tiny(search_rule="prior")
    env.close()
    state = algo.init_state(2)
    for i in range(len(flags)):
        state = algo.adapt(state, [outcomes(*f) for f in flags[: i + 1]])
        got = pb.adapt(pb.init_state(2), eps[: i + 1])["grip"][:, 0]
        np.testing.assert_allclose(got, state["grip"], rtol=1e-6)
        if i == 0:  # crushed at 4 N: not the bisection's log midpoint of 0.5-4 N
            assert 1.0 < state["grip"][0] < 4.0 and state["grip"][0] != pytest.approx(2**0.5)
    with pytest.raises(BundleInputError, match="lacks \\['crushed', 'raised'\\]"):
        bundle.adapt(bundle.init_state(), [{"lifted": True}])
    with pytest.raises(BundleInputError, match="True/False"):
        bundle.adapt(bundle.init_state(), [{"lifted": 0.5, "crushed": False}])


def test_the_dr_line_exports_without_adaptation_and_the_oracle_line_is_refused(tmp_path):
    from metagrasp.adapt.runtime import load_bundle
    from metagrasp.export.parity import graph_parity
    from metagrasp.export.writer import ExportError, trace
    from tests.bundles import write_plan

    for name in ("sac-grip-dr", "sac-grip"):
        overrides = {"run": {"num_envs": 2, "workers": 0}, "algo": dict(TINY)}
        if name == "sac-grip":
            overrides["algo"]["act_with"] = "fixed"
        resolved = resolve_config(name, "grasp-lift", "quick", overrides=overrides)
        env = make_vector_env("grasp-lift", 2, seed=0, workers=0)
        spec = env_spec(env, "grasp-lift")
        env.close()
        algo = build_algorithm(resolved, spec)
        if name == "sac-grip-dr":  # its normaliser saw one command: a variance of zero
            rng = np.random.default_rng(0)
            obs, task = rng.normal(size=(64, spec.obs_dim)), np.zeros((64, spec.task_dim))
            algo.norm.update(algo._inputs(obs, task))
        plan = algo.export_modules()
        assert plan.adaptation == {"kind": "none"} and list(plan.graph("policy").inputs) == ["obs"]
        graph = plan.graph("policy")
        assert graph_parity(graph, trace(graph), 200)["max_abs_diff"] < 1e-5
        bundle = load_bundle(write_plan(plan, spec, tmp_path / name / "policy.onnx"))
        assert not bundle.adapts
        state = bundle.init_state()
        assert bundle.adapt(state, [{"lifted": False, "crushed": True}]) is state
    algo.config.act_with = "oracle"
    with pytest.raises(ExportError, match="hidden parameters"):
        algo.export_modules()


def test_every_squeeze_is_the_commanded_one_and_the_replay_keeps_the_raw_action():
    """The env gets the network's action with each ``g > 0`` replaced by the command's
    gripper value; the replay stores what the network chose."""
    from metagrasp.actions import grip_action

    env, algo, _ = tiny(warmup_steps=10_000)  # uniform raw actions: both signs of g
    raw = np.array([[0.3, 0, 0, 0, 0, 0.9], [0.3, 0, 0, 0, 0, -0.4]], np.float32)
    out = algo.apply_grip(raw, np.array([2.0, 2.0]))
    assert out[0, -1] == pytest.approx(grip_action(2.0 / 20.0)) and out[1, -1] == -0.4
    np.testing.assert_array_equal(out[:, :-1], raw[:, :-1])
    algo.train_iteration(env)
    env.close()
    g = algo.replay.data["actions"][: algo.replay.size, -1]
    # Uniform raw g: a spread over (0, 1], not the one command value per episode.
    assert (g > 0).sum() > 50 and len(np.unique(np.round(g[g > 0], 3))) > 50


def test_the_dr_line_squeezes_at_the_best_single_grip_in_training_and_at_test():
    overrides = {"run": {"num_envs": 2, "workers": 0}, "algo": dict(TINY)}
    resolved = resolve_config("sac-grip-dr", "grasp-lift", "quick", overrides=overrides)
    env = make_vector_env("grasp-lift", 2, seed=0, workers=0)
    algo = build_algorithm(resolved, env_spec(env, "grasp-lift"))
    algo.train_iteration(env)
    env.close()
    command = algo.replay.data["obs"][: algo.replay.size, -1]
    assert np.all(command == encode_grip(np.array([4.0]))[0, 0])
    assert algo.demos.data["obs"].shape[1] == algo.spec.obs_dim + 1
    assert algo.init_state(2) is None and algo.adapt(None, []) is None


def test_command_jitter_moves_each_episodes_command_off_the_privileged_grip():
    """``command_jitter``: one command per member and episode, stored with the steps."""
    from metagrasp.sim.scripted import privileged_grips

    commands = {}
    for jitter in (0.0, 0.5):
        env, algo, _ = tiny(command_jitter=jitter, warmup_steps=10_000)
        ep = algo.collect(env)
        env.close()
        valid = ep.mask > 0
        command = algo.replay.data["obs"][: algo.replay.size, -1]
        want = encode_grip(privileged_grips(ep.task))[:, 0]
        per_member = np.split(command, np.cumsum(valid.sum(1))[:-1])
        assert all(np.all(c == c[0]) for c in per_member)  # constant within an episode
        commands[jitter] = np.array([c[0] for c in per_member]) - want
    np.testing.assert_allclose(commands[0.0], 0.0, atol=1e-6)
    assert np.all(np.abs(commands[0.5]) > 1e-3)


def test_episodes_say_whether_the_pads_ever_squeezed_the_object():
    """``Episodes.gripped``: true for the scripted grasp, false for a gripper left open."""
    from metagrasp.policies.collect import collect_episodes
    from metagrasp.sim.scripted import ScriptedGrasp

    env = make_vector_env("grasp-lift", 2, seed=0, workers=0)
    experts = []

    def scripted(obs, task):
        if not experts:  # built after collect_episodes' reset drew the tasks
            experts.extend(ScriptedGrasp(t, config=env.config) for t in env.current_tasks())
        return np.stack([e(o) for e, o in zip(experts, obs, strict=True)]), {}

    grasped = collect_episodes(env, scripted, 100)
    opened = collect_episodes(env, lambda o, t: (np.tile([0, 0, 0, 0, 0, -1.0], (2, 1)), {}), 100)
    env.close()
    assert grasped.gripped.tolist() == [True, True] and not opened.gripped.any()
    assert grasped.select(np.array([1])).gripped.tolist() == [True]


def test_the_prior_search_picks_the_grip_most_windows_consistent_with_the_outcomes_hold():
    from metagrasp.grip_search import next_grip_prior

    windows = np.array([[2.0, 3.0], [2.5, 3.5], [6.0, 9.0], [0.6, 0.9]])
    args = (4.0, 0.5, 20.0)
    assert next_grip_prior([], windows, *args) == 4.0
    assert next_grip_prior([(4.0, True, False)], windows, *args) == 4.0  # a lift is kept
    # Crushed at 4 N: the windows below 4 remain; most of their weight is at 2.5-3 N.
    after_crush = next_grip_prior([(4.0, False, True)], windows, *args)
    assert 2.5 <= after_crush <= 3.0
    # Dropped at 4 N: above the window [6, 9], or the motion failed inside none of them.
    assert 6.0 <= next_grip_prior([(4.0, False, False)], windows, *args) <= 9.0
    # A miss says nothing: the same grip again; after a crush too, the miss is ignored.
    assert next_grip_prior([(4.0, False, False, False)], windows, *args) == 4.0
    crush_miss = [(4.0, False, True), (after_crush, False, False, False)]
    assert next_grip_prior(crush_miss, windows, *args) == after_crush
    # Outcomes no training window explains: the plain bisection decides.
    odd = [(0.5, False, True)]
    assert next_grip_prior(odd, windows, *args) == next_grip(odd, *args)
    with pytest.raises(ValueError, match="windows"):
        next_grip_prior([(4.0, False, True)], np.zeros((0, 2)), *args)


def test_training_grip_windows_hold_each_objects_privileged_grip():
    from metagrasp.sim.scripted import training_grip_windows

    w = training_grip_windows(200, seed=1)
    assert w.shape == (200, 2) and (w[:, 0] < w[:, 1]).all()
    np.testing.assert_array_equal(w, training_grip_windows(200, seed=1))  # seeded


def test_the_squeeze_guard_caps_a_position_target_that_closes_on_a_held_object():
    """g <= 0 is a position target at full current: with the guard, one narrower than the
    fingers now, while they hold something, squeezes at the command instead; the graph
    does the same."""
    from metagrasp.actions import OBS_NAMES, grip_action
    from metagrasp.export.parity import graph_parity
    from metagrasp.export.writer import trace
    from metagrasp.policies.grip_search import closes_on_held_object

    obs = np.zeros((4, len(OBS_NAMES)), np.float32)
    names = ("q_gripper", "gripper_opening", "gripper_effort")
    i_q, i_open, i_load = (OBS_NAMES.index(n) for n in names)
    obs[:, i_q], obs[:, i_open], obs[:, i_load] = 0.02, 0.03, 0.08  # holding, 2 cm travel
    obs[3, i_load] = 0.0  # not holding
    g = np.array([-0.2, -0.9, 0.4, -0.2], np.float32)  # closer, wider, a squeeze, closer
    np.testing.assert_array_equal(closes_on_held_object(g, obs), [True, False, False, False])
    env, algo, _ = tiny(squeeze_guard=True)
    env.close()
    raw = np.zeros((4, 6), np.float32)
    raw[:, -1] = g
    out = algo.apply_grip(raw, np.full(4, 2.0), obs)
    want = grip_action(2.0 / 20.0)
    np.testing.assert_allclose(out[:, -1], [want, -0.9, want, -0.2], rtol=1e-6)
    algo.config.squeeze_guard = False
    assert algo.apply_grip(raw, np.full(4, 2.0), obs)[0, -1] == pytest.approx(-0.2)
    algo.config.squeeze_guard = True
    graph = algo.export_modules().graph("policy")
    assert graph_parity(graph, trace(graph), 500)["max_abs_diff"] < 1e-5


def test_the_guard_sees_the_gentlest_squeezes_hold_with_guard_load_ratio():
    """A 0.5 N squeeze loads the servo 2.5 %, under the guard's fixed 3 %: with
    ``guard_load_ratio`` 0 a position target that closes on the object passes at full
    current; with 0.8 the guard counts the object as held from 80 % of the command's load
    and squeezes at the command. Stronger commands keep the fixed 3 %. The graph, with the
    grip as an input and with a fixed grip, does the same."""
    from metagrasp.actions import OBS_NAMES, grip_action
    from metagrasp.export.parity import graph_parity
    from metagrasp.export.writer import trace

    obs = np.zeros((3, len(OBS_NAMES)), np.float32)
    names = ("q_gripper", "gripper_opening", "gripper_effort")
    i_q, i_open, i_load = (OBS_NAMES.index(n) for n in names)
    obs[:, i_q], obs[:, i_open], obs[:, i_load] = 0.02, 0.03, 0.025  # a 0.5 N hold
    obs[2, i_load] = 0.015  # less than 80 % of it: not held
    raw = np.zeros((3, 6), np.float32)
    raw[:, -1] = -0.2  # a position target narrower than the fingers
    grips = np.array([0.5, 4.0, 0.5])
    gentle, firm = grip_action(0.5 / 20.0), grip_action(4.0 / 20.0)
    env, algo, _ = tiny(squeeze_guard=True, guard_load_ratio=0.0)
    env.close()
    assert algo.apply_grip(raw, grips, obs)[:, -1].tolist() == pytest.approx([-0.2] * 3)
    algo.config.guard_load_ratio = 0.8  # the default
    out = algo.apply_grip(raw, grips, obs)[:, -1]
    np.testing.assert_allclose(out, [gentle, -0.2, -0.2], rtol=1e-6)  # 4 N: 2.5 % < 3 %
    assert firm != pytest.approx(gentle)
    plan = algo.export_modules()
    assert plan.graphs[0].module.guard["load_ratio"] == 0.8
    for graph in (plan.graph("policy"), algo._export_plan(search=False).graph("policy")):
        assert graph_parity(graph, trace(graph), 500)["max_abs_diff"] < 1e-5
    with pytest.raises(ConfigError, match="guard_load_ratio"):
        tiny(guard_load_ratio=1.5)


def test_a_bundle_with_retry_misses_needs_the_gripped_flag_and_retries_a_miss(tmp_path):
    from metagrasp.adapt.runtime import BundleInputError, load_bundle
    from tests.bundles import write_plan

    env, algo, _ = tiny(retry_misses=True)
    spec = algo.spec
    env.close()
    plan = algo.export_modules()
    assert plan.adaptation["episode_fields"] == ["lifted", "crushed", "gripped", "raised"]
    bundle = load_bundle(write_plan(plan, spec, tmp_path / "policy.onnx"))
    miss = {"lifted": False, "crushed": False, "gripped": False, "raised": False}
    drop = {**miss, "gripped": True}
    assert bundle.adapt(bundle.init_state(), [miss])["grip"][0, 0] == 4.0  # the same again
    assert bundle.adapt(bundle.init_state(), [drop])["grip"][0, 0] > 4.0
    with pytest.raises(BundleInputError, match="gripped"):
        bundle.adapt(bundle.init_state(), [{"lifted": False, "crushed": False, "raised": False}])


def test_retry_drops_tries_a_grip_that_lifted_again_after_it_drops_the_object():
    lift, drop, crush = (4.0, True, False), (4.0, False, False), (4.0, False, True)
    args = (4.0, 0.5, 20.0)
    assert next_grip([lift, drop], *args) == pytest.approx(80**0.5)  # the default: stronger
    assert next_grip([lift, drop], *args, retry_drops=True) == 4.0  # the motion failed
    # A crush still counts after a lift, and a drop below the weakest lift is a real drop.
    assert next_grip([lift, crush], *args, retry_drops=True) == pytest.approx(2**0.5)
    weaker = [lift, crush, (2**0.5, False, False)]
    assert next_grip(weaker, *args, retry_drops=True) == pytest.approx(next_grip(weaker, *args))
    # Without a lift it changes nothing.
    assert next_grip([drop, drop], *args, retry_drops=True) == next_grip([drop, drop], *args)
    from metagrasp.grip_search import next_grip_prior
    from metagrasp.sim.scripted import training_grip_windows

    windows = training_grip_windows(50, seed=0)
    assert next_grip_prior([lift, drop], windows, *args, retry_drops=True) == 4.0
    for retry, want in ((False, math.sqrt(80.0)), (True, 4.0)):
        env, algo, _ = tiny(retry_drops=retry)
        env.close()
        state = algo.init_state(1)
        state = algo.adapt(state, [outcomes([True], [False])])
        state = algo.adapt(state, [outcomes([True], [False]), outcomes([False], [False])])
        assert state["grip"] == pytest.approx([want])


def test_a_bundle_with_retry_drops_searches_as_the_run_does(tmp_path):
    from metagrasp.adapt.runtime import load_bundle
    from tests.bundles import write_plan

    env, algo, _ = tiny(retry_drops=True)
    spec = algo.spec
    env.close()
    plan = algo.export_modules()
    assert plan.adaptation["settings"]["retry_drops"] is True
    bundle = load_bundle(write_plan(plan, spec, tmp_path / "policy.onnx"))
    lift = {"lifted": True, "crushed": False, "raised": True}
    drop = {"lifted": False, "crushed": False, "raised": False}
    assert bundle.adapt(bundle.init_state(), [lift, drop])["grip"][0, 0] == 4.0
    # A bundle exported before the setting existed searches as before (stronger).
    del bundle.adaptation["settings"]["retry_drops"]
    assert bundle.adapt(bundle.init_state(), [lift, drop])["grip"][0, 0] > 4.0


def raised_block(rises_cm: list[float], success: list[bool], crushed: list[bool]) -> Episodes:
    """Episodes whose object rises ``rises_cm`` and falls back, as the observations show
    it (the only part of them ``keep_raised`` reads: the object's observed height)."""
    from metagrasp.actions import OBS_NAMES

    z = OBS_NAMES.index("obj_z")
    n, t = len(rises_cm), 30
    obs = np.zeros((n, t, len(OBS_NAMES)), np.float32)
    profile = np.sin(np.linspace(0, np.pi, t))  # up, then down again: dropped
    obs[:, :, z] = 0.02 + np.asarray(rises_cm)[:, None] / 100 * profile
    nxt = np.concatenate([obs[:, 1:], obs[:, -1:]], axis=1)
    a = np.zeros((n, t, 6), np.float32)
    return Episodes(
        obs, a, np.zeros((n, t), np.float32), nxt, np.zeros((n, t), np.float32),
        np.ones((n, t), np.float32), np.zeros((n, 11), np.float32), np.array(success),
        crushed=np.array(crushed), gripped=np.ones(n, bool),
    )  # fmt: skip


def test_keep_raised_keeps_a_grip_that_carried_the_object_up_before_it_fell():
    from metagrasp.grip_search import fold_raised

    args = (4.0, 0.5, 20.0)
    fell, dropped = (4.0, False, False), (4.0, False, False)
    # A drop after the object got 5 cm up keeps the grip, up to keep_raised times at it.
    assert next_grip([fell], *args, raised=[True], keep_raised=1) == 4.0
    assert next_grip([fell, fell], *args, raised=[True, True], keep_raised=1) > 4.0
    assert next_grip([fell, fell], *args, raised=[True, True], keep_raised=2) == 4.0
    assert next_grip([dropped], *args, raised=[False], keep_raised=1) > 4.0  # never up
    assert next_grip([fell], *args, raised=[True]) == next_grip([fell], *args)  # off
    crushed_up = (4.0, False, True)  # a crush is a crush, however high it went
    assert fold_raised([crushed_up], [True], 3) == [crushed_up]
    with pytest.raises(ValueError, match="one raised flag per outcome"):
        fold_raised([fell], None, 1)
    # Fell from 6 cm; crushed at 6 cm; rose 2 cm only; lifted and held to the end.
    block = raised_block(
        [6.0, 6.0, 2.0, 6.0], [False, False, False, True], [False, True, False, False]
    )
    for keep, first in ((0, math.sqrt(80.0)), (1, 4.0)):
        env, algo, _ = tiny(keep_raised=keep, raised_nudge=1.0)  # the nudge: its own test
        env.close()
        state = algo.adapt(algo.init_state(4), [block])
        assert state["grip"] == pytest.approx([first, math.sqrt(2.0), math.sqrt(80.0), 4.0])
    # The same fall twice at 4 N: the second is a drop.
    state = algo.adapt(state, [block, block])
    assert state["grip"][0] == pytest.approx(math.sqrt(80.0))
    with pytest.raises(ConfigError, match="keep_raised"):
        tiny(keep_raised=-1)


def test_raised_nudge_tries_a_little_firmer_after_a_carry_and_returns_if_that_crushes():
    args = (4.0, 0.5, 20.0)
    fell, crushed = (False, False), (False, True)
    kw = {"keep_raised": 3, "raised_nudge": 1.2}
    assert next_grip([(4.0, *fell)], *args, raised=[True], **kw) == pytest.approx(4.8)
    # Firmer crushed it: back to the grip that carried it, not the bisection below it.
    tried = [(4.0, *fell), (4.8, *crushed)]
    assert next_grip(tried, *args, raised=[True, False], **kw) == pytest.approx(4.0)
    # Carried and fell again at 4 N: at most the log midpoint up to the crushing 4.8 N.
    tried.append((4.0, *fell))
    got = next_grip(tried, *args, raised=[True, False, True], **kw)
    assert got == pytest.approx(math.sqrt(4.0 * 4.8))
    # A drop that never raised it, or nudge 1: as keep_raised alone.
    assert next_grip([(4.0, *fell)], *args, raised=[False], **kw) == pytest.approx(math.sqrt(80))
    assert next_grip([(4.0, *fell)], *args, raised=[True], keep_raised=3) == 4.0
    with pytest.raises(ValueError, match="raised_nudge"):
        next_grip([], *args, raised_nudge=0.9)
    with pytest.raises(ConfigError, match="raised_nudge"):
        tiny(raised_nudge=0.5)


def test_a_bundle_with_keep_raised_needs_the_raised_flag_and_searches_as_the_run_does(tmp_path):
    from metagrasp.adapt.runtime import BundleInputError, load_bundle
    from metagrasp.export.parity import _episode_dicts
    from tests.bundles import write_plan

    env, algo, _ = tiny(keep_raised=1)
    spec = algo.spec
    env.close()
    plan = algo.export_modules()
    assert plan.adaptation["episode_fields"] == ["lifted", "crushed", "raised"]
    assert plan.adaptation["settings"]["keep_raised"] == 1
    bundle = load_bundle(write_plan(plan, spec, tmp_path / "policy.onnx"))
    block = raised_block(
        [6.0, 6.0, 2.0, 6.0], [False, False, False, True], [False, True, False, False]
    )
    got = bundle.adapt(bundle.init_state(4), _episode_dicts(block))["grip"][:, 0]
    want = algo.adapt(algo.init_state(4), [block])["grip"]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    twice = bundle.adapt(bundle.init_state(4), _episode_dicts(block) * 2)["grip"][:, 0]
    want = algo.adapt(algo.adapt(algo.init_state(4), [block]), [block, block])["grip"]
    np.testing.assert_allclose(twice, want, rtol=1e-6)
    with pytest.raises(BundleInputError, match="raised"):
        bundle.adapt(bundle.init_state(), [{"lifted": False, "crushed": False}])
    # With raised_nudge the device nudges as the run does (and the bundle stamps it).
    env, algo, _ = tiny(keep_raised=1, raised_nudge=1.3)
    env.close()
    plan = algo.export_modules()
    assert plan.adaptation["settings"]["raised_nudge"] == 1.3
    bundle = load_bundle(write_plan(plan, spec, tmp_path / "nudged.onnx"))
    got = bundle.adapt(bundle.init_state(4), _episode_dicts(block))["grip"][:, 0]
    want = algo.adapt(algo.init_state(4), [block])["grip"]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[0] == pytest.approx(4.0 * 1.3, rel=1e-6)
