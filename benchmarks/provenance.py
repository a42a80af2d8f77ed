"""Where a benchmark's numbers come from: the date, the git commit and the machine.

Every script under ``benchmarks/`` stamps its JSON with :func:`stamp`, and
``run_all.py`` stamps each table of its report with the same functions, so that a
number in ``docs/BENCHMARKS.md`` can be traced to the code and hardware that measured it.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_stamp() -> dict[str, Any]:
    """Where the numbers come from: CPU, cores, memory, versions, GPU."""
    cpu = platform.processor() or platform.machine()
    ram_gib = float("nan")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = int(line.split()[1]) / 2**20
                break
    except OSError:
        pass  # not Linux: keep platform's answer, RAM unknown
    gpu = "no GPU"
    if shutil.which("nvidia-smi"):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        names = [n.strip() for n in out.stdout.splitlines() if n.strip()]
        if out.returncode == 0 and names:
            gpu = ", ".join(names)
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": cpu,
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "cores_available": available,
        "ram_gib": round(ram_gib, 1),
        "gpu": gpu,
        "python": platform.python_version(),
        "mujoco": _version("mujoco"),
        "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime"),
        "os": platform.platform(),
    }


def machine_line(m: dict[str, Any]) -> str:
    """The machine stamp in one line."""
    return (
        f"{m['cpu']} ({m['arch']}), {m['cores']} cores ({m['cores_available']} available), "
        f"{m['ram_gib']} GiB RAM, {m['gpu']}; Python {m['python']}, mujoco {m['mujoco']}, "
        f"torch {m['torch']}, onnxruntime {m['onnxruntime']}"
    )


def git_commit() -> str:
    """Short HEAD, plus " (dirty)" when tracked files differ from it."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""

    sha = git("rev-parse", "--short", "HEAD") or "unknown (not a git checkout)"
    return sha + (" (dirty)" if git("status", "--porcelain", "--untracked-files=no") else "")


def utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def stamp() -> dict[str, str]:
    """``date`` (UTC), ``commit`` (dirty-marked) and ``machine`` (one line), for a JSON."""
    return {"date": utc_now(), "commit": git_commit(), "machine": machine_line(machine_stamp())}
