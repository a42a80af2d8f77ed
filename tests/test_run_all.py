"""benchmarks/run_all.py: the report's stamps, plots and failure isolation (quick budgets).

Runs the cheapest sections only (simulation throughput, policy latency and the device's
judgement, about 45 s on 2 cores); the training, soak and calibration sections run the
same code path.
"""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN_ALL = REPO / "benchmarks" / "run_all.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run_all(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RUN_ALL), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench-report")
    res = _run_all("--quick", "--only", "sim", "policy", "judging", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    return out


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)


def test_every_table_is_stamped_and_has_its_plots(report):
    text = (report / "REPORT.md").read_text()
    tables = text.count("\n### ")
    assert tables >= 7  # sim throughput, sim targets, policy latency, 4 judging tables
    # Each table: machine, exact command, date and commit right above it.
    for stamp in ("*Machine:* ", "*Command:* `", "*Date:* 20", "*Commit:* "):
        assert text.count(stamp) == tables, stamp
    assert "cores" in text and "GiB RAM" in text and "mujoco 3." in text and "torch " in text
    assert "`python benchmarks/sim_bench.py --seconds 0.2 --num-envs 4 --json" in text
    assert "`python benchmarks/policy_bench.py " in text
    assert "UTC" in text and "Quick budgets" in text
    if _git("rev-parse", "HEAD").returncode == 0:  # a git checkout (CI's clone is one)
        # The stamped commit is HEAD or, if someone committed meanwhile, one of its ancestors.
        stamped = {
            ln.split("*Commit:* ")[1].split()[0] for ln in text.splitlines() if "*Commit:* " in ln
        }
        assert len(stamped) == 1
        sha = stamped.pop()
        assert _git("merge-base", "--is-ancestor", sha, "HEAD").returncode == 0, sha
        dirty = _git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        if not dirty:  # e.g. CI's fresh clone: a clean tree is never stamped "dirty"
            assert "(dirty)" not in text
    # The measured rows are there.
    assert "| raw `mj_step(m, d)`, 1 step/call (primary raw) |" in text
    assert "| `act`, ppo-oracle" in text and "| `adapt`, cavia" in text
    assert "| object gives way (--detect-crush), all |" in text
    assert "| bisection, the device's judgement (--detect-crush) |" in text
    plots = [line[line.index("](") + 2 : -1] for line in text.splitlines() if line.startswith("![")]
    assert {"sim/sim_throughput.png", "policy/policy_latency.png"} <= set(plots)
    assert {"judging/scripted_grip_test.png", "judging/scripted_grip_hard.png"} <= set(plots)
    for rel in plots:
        data = (report / rel).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000, rel
    for name in ("sim", "policy", "judging"):
        rec = json.loads((report / name / "section.json").read_text())
        assert rec["status"] == "ok" and rec["quick"] and rec["machine"]["cores"] >= 1
        assert all(s["rc"] == 0 for s in rec["steps"])
    assert json.loads((report / "sim" / "sim_bench.json").read_text())["rows"]["env"]


def test_a_failed_section_is_reported_and_the_others_kept(report, tmp_path):
    out = tmp_path / "report"
    shutil.copytree(report, out)
    missing = tmp_path / "no-such-run"
    res = _run_all("--quick", "--only", "policy", "--policy-runs", str(missing), "--out", str(out))
    assert res.returncode == 1
    text = (out / "REPORT.md").read_text()
    assert "| [policy](#policy) | failed" in text and "**FAILED**" in text
    assert "exited" in text and "no-such-run" in text  # the error, with the command
    # The earlier section is still in the report, with its table and plot.
    assert "| [sim](#sim) | ok" in text
    assert "sim/sim_throughput.png" in text and (out / "sim" / "sim_throughput.png").exists()


def test_cli_bench_all_forwards_to_run_all(tmp_path):
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "metagrasp.cli", "bench", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )

    res = cli("all", "--help")
    assert res.returncode == 0 and "--only SECTION" in res.stdout and "--quick" in res.stdout
    res = cli("all", "--only", "no-such-section", "--out", str(tmp_path))
    assert res.returncode == 2 and "unknown section 'no-such-section'" in res.stderr
    assert "point-nav" in res.stderr and "calibration" in res.stderr


def test_quick_grasp_lift_step_shrinks_every_budget_of_its_lines():
    """--quick must not train a line's own --train-set budget (400 k steps, 1000 demos)."""
    import importlib.util

    sys.path.insert(0, str(REPO / "benchmarks"))  # run_all imports its renderer
    try:
        spec = importlib.util.spec_from_file_location("run_all", RUN_ALL)
        run_all = importlib.util.module_from_spec(spec)
        sys.modules["run_all"] = run_all  # dataclasses look their module up
        spec.loader.exec_module(run_all)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
        sys.modules.pop("run_all", None)
    fields = {f.name: [] for f in dataclasses.fields(run_all.Context)}
    ctx = run_all.Context(**{**fields, "out": Path("/r"), "runs": Path("/r/runs"), "quick": True})
    steps = run_all.grasp_lift_steps(ctx, Path("/r/grasp-lift"))
    modes = [s for s in steps if s.name.startswith("failure-modes-")]
    *meta_rl, closure, agreement = steps[: len(steps) - len(modes)]
    # The closures read the grip and oracle steps' collected results.
    assert closure.name == "grasp-lift-closure" and "reference_lines.py" in closure.argv[1]
    assert "/r/grasp-lift/grasp-lift-oracle/results.json" in closure.argv
    assert closure.argv[2] == "/r/grasp-lift/grasp-lift-grip/results.json"  # its DR line too
    assert "--dr-from" not in closure.argv
    oracle = next(s for s in meta_rl if s.name == "grasp-lift-oracle")
    assert "sac-grip:algo.target_entropy=-12" in oracle.argv
    # The diagnostics read the grip step's quick runs, with its seeds.
    assert agreement.name == "judge-agreement" and "/r/runs/grasp-lift-quick/runs/sac-grip-s0" in (
        agreement.argv
    )
    assert agreement.argv[agreement.argv.index("--seeds") :][:2] == ["--seeds", "0"]
    assert [s.name for s in modes] == [f"failure-modes-{n}" for n in run_all.FAILURE_MODE_LINES]
    for step in modes:
        assert step.argv[step.argv.index("--seeds") :][:2] == ["--seeds", "0"]
        line = "sac-grip-dr" if step.name.endswith("-dr") else "sac-grip"
        assert f"/r/runs/grasp-lift-quick/runs/{line}-s0" in step.argv
    for step in meta_rl:
        argv = step.argv
        own = [argv[i + 1] for i, a in enumerate(argv) if a == "--train-set"]
        if step.name == "grasp-lift-oracle":  # its own setting is not a budget
            own = [o for o in own if o != "sac-grip:algo.target_entropy=-12"]
            assert argv[argv.index("--set") + 1] == "run.total_env_steps=1600"
        else:
            assert own
        assert all(o.endswith(":algo.demo_episodes=2,run.total_env_steps=1600") for o in own)
        assert argv[argv.index("--preset") + 1] == "quick"


def _benchmark_module(name: str):
    sys.path.insert(0, str(REPO / "benchmarks"))  # benchmarks import their siblings
    try:
        import importlib

        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def _render_committed(tmp_path: Path, render: str, src: str, step: str, section: str):
    """A section's renderer on a committed result file: ``(tables, the file's JSON)``."""
    report_render = _benchmark_module("report_render")
    path = REPO / src
    shutil.copy(path, tmp_path / path.name)
    cmd = {"name": step, "command": f"python benchmarks/{step}.py ..."}
    rec = {"name": section, "started": "2026-12-02 00:00 UTC", "steps": [cmd]}
    return getattr(report_render, render)(tmp_path, rec), json.loads(path.read_text())


def test_the_judge_agreement_table_is_rendered_from_its_json(tmp_path):
    """The grasp-lift section's last table: the shipped family-v4 agreement file."""
    src = "docs/benchmarks/grasp-lift-grip/family-v4/judge-agreement-test.json"
    (table,), res = _render_committed(
        tmp_path, "render_grasp_lift", src, "judge-agreement", "grasp-lift"
    )
    assert f"{res['judgements']} judgements" in table.title
    crushed = res["confusion"]["crushed"]
    assert f"| crushed | {crushed['crushed']} | {crushed['lifted']} | {crushed['missed']} |" in (
        table.markdown
    )
    assert f"Crush recall {res['crush_recall']:.2f}" in table.note and "mesh_4" in table.note


def test_the_failure_modes_table_is_rendered_from_its_json(tmp_path):
    """A grasp-lift failure-mode table: the committed search line's file, every k and shape."""
    src = "docs/benchmarks/grasp-lift-grip/failure-modes/failure-modes-search-test.json"
    (table,), res = _render_committed(
        tmp_path, "render_grasp_lift", src, "failure-modes-search", "grasp-lift"
    )
    assert f"{len(res['runs'])} runs x seeds {res['seeds']}" in table.title
    assert "sampled actions" in table.title
    rows = [*(f"k = {k}" for k in range(len(res["per_k"]))), *res["by_shape"]]
    counts = [*res["per_k"], *res["by_shape"].values()]
    for name, c in zip(rows, counts, strict=True):
        n = sum(c.values())
        shares = " | ".join(f"{c[m] / n:.3f}" for m in res["modes"])
        assert f"| {name} | {n} | {shares} |" in table.markdown


def test_the_wrist_rate_limit_moves_the_roll_command_at_its_speed_only():
    """benchmarks/wrist_rate.py: a 180-degree finger_yaw jump ramps at the rate, counted."""
    import math

    import numpy as np

    from metagrasp.sim.grasp_env import EnvConfig, GraspEnv

    wrist = _benchmark_module("wrist_rate")
    env = wrist.WristRateLimit(GraspEnv(config=EnvConfig(task="grasp-lift")), rate=5.0)
    env.reset(seed=0)
    step = 5.0 / 25 / (math.pi / 2)  # rad/s -> finger_yaw action units per 25 Hz step
    yaw = [float(env.action(np.array([0, 0, 0, 1, 0, -1], np.float32))[3]) for _ in range(6)]
    assert np.allclose(np.diff(yaw), step, atol=1e-6)  # ramps from the joint, never jumps
    assert env.limited == env.steps == 6 and env.max_lag_rad > 1.2
    # Once there, a command within reach passes unchanged and is not counted.
    for _ in range(10):
        env.action(np.array([0, 0, 0, 1, 0, -1], np.float32))
    limited = env.limited
    assert env.action(np.array([0, 0, 0, 0.95, 0, -1], np.float32))[3] == np.float32(0.95)
    assert env.limited == limited
    env.close()


def test_the_wrist_rate_table_is_rendered_from_its_json(tmp_path):
    """The calibration section's wrist table: the committed measurement's file."""
    src = "docs/benchmarks/wrist-rate.json"
    (table,), res = _render_committed(
        tmp_path, "render_wrist_rate", src, "wrist_rate", "calibration"
    )
    assert f"{res['sim_flip']['peak_rad_s']:.1f} rad/s" in table.note
    for split, cells in res["splits"].items():
        for rate in cells:
            assert f"| {split} | {'none (the sim)' if rate == 'none' else rate + ' rad/s'} |" in (
                table.markdown
            )


def test_failure_modes_sorts_each_episode_into_one_outcome():
    """Synthetic episodes whose object height and gripper commands spell each outcome."""
    import numpy as np

    from metagrasp.actions import OBS_NAMES, ActionMapConfig
    from metagrasp.policies.collect import Episodes

    fm = _benchmark_module("failure_modes")
    z, q = OBS_NAMES.index("obj_z"), OBS_NAMES.index("q_gripper")
    c = ActionMapConfig()
    n, steps = 6, 20
    obs = np.zeros((n, steps, len(OBS_NAMES)), np.float32)
    obs[..., q] = c.grip_stop + 0.2 * (c.grip_open - c.grip_stop)  # fingers on the object
    obs[..., OBS_NAMES.index("gripper_effort")] = 0.2  # and squeezing it
    obs[..., OBS_NAMES.index("gripper_opening")] = 0.02
    act = np.zeros((n, steps, 6), np.float32)
    act[..., 5] = 0.5  # squeezing
    rise = np.concatenate([np.linspace(0, 0.08, 10), np.full(10, 0.08)])
    for i in (0, 1, 2, 3):
        obs[i, :, z] = rise
    obs[2, 12, z] = 0.08
    act[2, 12, 5] = -0.9  # opens wide while the object is up
    act[3, 12, 5] = -0.1  # a position target inside the fingers: not an opening
    obs[3, 15:, OBS_NAMES.index("gripper_opening")] = 0.0  # it slipped out: the fingers shut
    act[3, 16, 5] = -0.9  # and then open to grasp again: not the cause
    obs[4, :, z] = np.linspace(0, 0.03, steps)  # picked up, never to 5 cm
    ep = Episodes(
        obs, act, np.zeros((n, steps), np.float32), obs.copy(), np.zeros((n, steps), np.float32),
        np.ones((n, steps), np.float32), np.zeros((n, 11), np.float32),
        np.array([True, False, False, False, False, False]),
        crushed=np.array([False, True, False, False, False, False]),
    )  # fmt: skip
    # Member i was built to end in the i-th outcome, in the order of precedence.
    assert fm.classify(ep, 5) == list(fm.MODES)
    assert fm.MODES[2:4] == ("released while held", "slipped out")
    res = {"per_k": [dict.fromkeys(fm.MODES, 0) | {"success": 3, "crushed": 1}]}
    assert "| k = 0 | 4 | 0.750 | 0.250 | 0.000 |" in fm.table("line", res)
    # Carry jitter: the arm's first action flips by 0.2 at every step of the carry (from
    # step 6, the first at 5 cm) and the gripper's changes do not count; the last 4
    # steps, before the lift, do not count either. Never lifted: NaN.
    ep.actions[0, 6:, 0] = 0.1 * (-1.0) ** np.arange(steps - 6)
    ep.actions[0, :6, 1] = np.arange(6.0)
    ep.actions[0, :, 5] = np.linspace(-1, 1, steps)
    jitter = fm.carry_jitter(ep, 5)
    assert jitter[0] == pytest.approx(0.2 / 5) and jitter[1] == 0.0
    assert np.isnan(jitter[4]) and np.isnan(jitter[5])


def test_the_meta_test_protocol_shows_each_block_to_an_observer_without_padding():
    from metagrasp.policies.evaluate import meta_test
    from metagrasp.policies.runner import build_algorithm, env_spec, resolve_config
    from metagrasp.sim import make_vector_env
    from metagrasp.sim.registry import family_split_tasks

    overrides = {"run": {"num_envs": 2, "workers": 0}, "algo": {"hidden": [8]}}
    resolved = resolve_config("ppo", "point-nav", "quick", overrides=overrides)
    env = make_vector_env("point-nav", 2, seed=0, workers=0)
    spec = env_spec(env, "point-nav")
    env.close()
    algo = build_algorithm(resolved, spec)
    seen: list[tuple[int, int]] = []
    tasks = len(family_split_tasks("point-nav", "test"))
    res = meta_test(algo, spec, "test", 1, (0,), num_envs=3, workers=0,
                    episode_observer=lambda k, ep: seen.append((k, len(ep.success))))  # fmt: skip
    assert sum(m for k, m in seen if k == 0) == sum(m for k, m in seen if k == 1) == tasks
    assert res["success"].shape == (1, tasks, 2)


@pytest.mark.parametrize("stop", [False, True])
def test_the_calibration_benchmark_resumes_an_aborted_episode_but_not_an_emergency_stop(
    tmp_path, monkeypatch, stop
):
    """benchmarks/calibration.py reruns a calibration whose episode aborted (a watchdog
    on a busy machine), but Ctrl-C / SIGTERM (an e-stop) ends it at once, robot stopped."""
    import metagrasp.sim.virtual_robot as virtual_robot
    from metagrasp.hardware.errors import EmergencyStopError, WatchdogError

    cal = _benchmark_module("calibration")
    stopped: list[bool] = []

    class Robot:  # the virtual robot's lifecycle only; the calibration is replaced below
        robot = path = pose_address = None

        def __init__(self, *args, **kwargs):
            pass

        def start(self):
            return self

        def stop(self):
            stopped.append(True)

        def answer(self, *args):
            return None

    calls: list[int] = []

    def calibrate(*args, **kwargs):  # every episode aborts
        calls.append(1)
        raise EmergencyStopError("stop") if stop else WatchdogError("late cycle")

    bundle = SimpleNamespace(graphs={"policy": SimpleNamespace(inputs=["obs", "grip"])})
    monkeypatch.setattr(virtual_robot, "VirtualRobot", Robot)
    monkeypatch.setattr(cal, "calibrate", calibrate)
    monkeypatch.setattr(cal, "load_bundle", lambda path: bundle)
    monkeypatch.setattr(cal, "virtual_arm_config", lambda bus: None)
    task = SimpleNamespace(task_id="t", crush_limit=5.0)
    with pytest.raises(EmergencyStopError if stop else WatchdogError):
        cal._robot_run("b.onnx", task, 3, cal.LoopConfig(), tmp_path)
    # An e-stop is not retried; aborted episodes are, five times, then the error stands.
    assert len(calls) == (1 if stop else 6) and stopped == [True]


def test_the_grasp_lift_report_renders_the_closures_against_the_oracle_reference(tmp_path):
    """report_render: the committed closure.md becomes one table per split."""
    report_render = _benchmark_module("report_render")
    src = REPO / "docs/benchmarks/grasp-lift-grip/target-entropy-smooth/closure/closure.md"
    (tmp_path / "grasp-lift-closure").mkdir()
    shutil.copy(src, tmp_path / "grasp-lift-closure" / "closure.md")
    cmd = {"name": "grasp-lift-closure", "command": "python benchmarks/reference_lines.py ..."}
    rec = {"name": "grasp-lift", "started": "2026-12-07 00:00 UTC", "steps": [cmd]}
    tables = report_render.render_grasp_lift(tmp_path, rec)
    assert len(tables) == 2
    assert "split `test`" in tables[0].title and "split `hard`" in tables[1].title
    assert "oracle line 0.910" in tables[0].title and tables[0].note.startswith("Lines from")
    assert "| sac-grip:squeeze_guard=true | 0.608" in tables[0].markdown
