"""Package-level contracts: namespace layout, device-side imports, CLI surface."""

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FOLDERS = ("core", "sim", "policies", "adapt", "hardware", "export")
TOP_LEVEL = {"sim", "policies", "adapt", "hardware", "export", "core"}


def _device_modules() -> list[str]:
    mods = []
    for folder, pkg in (("adapt", "metagrasp.adapt"), ("hardware", "metagrasp.hardware")):
        for path in sorted((ROOT / folder).glob("*.py")):
            name = pkg if path.stem == "__init__" else f"{pkg}.{path.stem}"
            mods.append(name)
    return mods


def test_device_side_never_imports_torch_or_mujoco():
    """Run in a fresh interpreter: a robot's computer has neither torch nor mujoco."""
    mods = _device_modules() + ["metagrasp", "metagrasp.errors", "metagrasp.kinematics"]
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'mujoco', 'dm_control'))\n"
        "assert not bad, f'device side imported {bad}'\n"
        "print('ok', len(sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_no_top_level_imports_of_repo_folders():
    """Code imports `metagrasp.sim`, never `sim` (it only works from the repo root)."""
    offenders = []
    for folder in FOLDERS + ("tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                offenders += [
                    f"{path}:{node.lineno} {n}" for n in names if n.split(".")[0] in TOP_LEVEL
                ]
    assert not offenders, offenders


def test_installed_under_one_namespace():
    import metagrasp
    import metagrasp.sim

    assert pathlib.Path(metagrasp.sim.__file__).parent.name == "sim"
    assert metagrasp.__version__


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "metagrasp.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_lists_subcommands_and_each_has_help():
    out = _cli("--help")
    assert out.returncode == 0
    for cmd in ("envs", "sim-bench", "rollout"):
        assert cmd in out.stdout
        sub = _cli(cmd, "--help")
        assert sub.returncode == 0 and "usage" in sub.stdout


def test_cli_unknown_command_fails():
    assert _cli("fly").returncode != 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("rollout", "--split", "dev"), "unknown split 'dev'"),
        (("rollout", "--task", "juggle"), "unknown task family 'juggle'"),
        (("rollout", "--video", "out.avi"), ".mp4, .gif or .png"),
        (("envs", "--show-tasks", "nope"), "unknown split 'nope'"),
    ],
)
def test_cli_bad_input_gives_clear_error(args, message):
    out = _cli(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
