"""Control-loop soak: 10,000 cycles at 50 Hz against the virtual robot, per protocol.

For each protocol, starts ``metagrasp virtual-robot`` as its own process (the MuJoCo arm
behind a pseudo-terminal, like a USB adapter), then runs ``deploy`` in this process with
the built-in ``sweep`` policy (every servo moving, gripper cycling) for one long episode,
and reports the loop period (p50/p99/max), the p99 period error, missed deadlines, the
servo read latency and the bus counters. A pty does not throttle to the baud rate, so the
report also gives the bytes per cycle and the wire time they would take at the robot
file's baud rate (10 bits per byte).

Usage::

    python benchmarks/soak.py --cycles 10000 --rate 50 --json docs/benchmarks/soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from provenance import stamp

from metagrasp.hardware.control_loop import LoopConfig
from metagrasp.hardware.deploy import deploy
from metagrasp.hardware.policies import PolicySpec, SweepPolicy
from metagrasp.hardware.recorder import load_recording
from metagrasp.hardware.robot_config import virtual_arm_config


def _start_virtual_robot(protocol: str, rt: int) -> tuple[subprocess.Popen, str, str]:
    cmd = [sys.executable, "-m", "metagrasp.cli", "virtual-robot", "--protocol", protocol]
    proc = subprocess.Popen(
        [*cmd, "--realtime-priority", str(rt)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    device = pose = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (device and pose):
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("device: "):
            device = line.split(": ", 1)[1].strip()
        elif line.startswith("object pose: "):
            pose = line.split(": ", 1)[1].strip()
    if not (device and pose):
        proc.kill()
        raise RuntimeError("virtual robot did not start")
    return proc, device, pose


def soak(protocol: str, cycles: int, rate: float, rt: int) -> dict:
    cfg = virtual_arm_config(protocol)
    proc, device, pose = _start_virtual_robot(protocol, rt)
    load_before = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory() as rec:
            loop = LoopConfig(
                rate_hz=rate, episode_steps=cycles, park_s=1.0, settle_s=0.5, realtime_priority=rt
            )
            t0 = time.monotonic()
            summary = deploy(
                SweepPolicy(PolicySpec(control_hz=rate)),
                cfg,
                device,
                pose_source=pose,
                episodes=1,
                loop=loop,
                record_dir=rec,
                log=lambda s: print(f"  [{protocol}] {s}", flush=True),
            )
            wall = time.monotonic() - t0
            episodes = load_recording(rec)["episodes"]
            if not episodes:
                raise RuntimeError(f"{protocol}: no episode ran: {summary.error}")
            data = episodes[0]["data"]
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    load_after = os.getloadavg()
    bus = summary.bus
    read_ms = data["read_s"] * 1e3
    compute_ms = data["compute_s"] * 1e3
    # Per cycle: one sync read (instruction + 6 replies) and one sync write of goals (the
    # gripper force write only when it changes). Sizes from the protocol framing.
    if protocol == "dynamixel":
        read_bytes = (14 + 6) + 6 * (11 + 10)
        write_bytes = 14 + 6 * 5
    else:
        read_bytes = (8 + 6) + 6 * (6 + 15)
        write_bytes = 8 + 6 * 3
    wire_ms = (read_bytes + write_bytes) * 10 / cfg.baudrate * 1e3
    return {
        "protocol": protocol,
        "rate_hz": rate,
        "realtime_priority": rt,
        "baudrate": cfg.baudrate,
        "wall_s": wall,
        **summary.timing,
        "read_p50_ms": float(np.percentile(read_ms, 50)),
        "read_p99_ms": float(np.percentile(read_ms, 99)),
        "compute_p50_ms": float(np.percentile(compute_ms, 50)),
        "compute_p99_ms": float(np.percentile(compute_ms, 99)),
        "bytes_per_cycle": read_bytes + write_bytes,
        "wire_ms_per_cycle_at_baud": wire_ms,
        "bus": bus,
        "episode_status": summary.episodes[0]["status"] if summary.episodes else None,
        "skipped_cycles": summary.episodes[0].get("skipped_cycles") if summary.episodes else None,
        "error": summary.error,
        "torque_off_failures": summary.torque_off_failures,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cycles", type=int, default=10_000)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--protocols", default="dynamixel,feetech")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument(
        "--realtime-priority",
        type=int,
        default=0,
        help="SCHED_FIFO priority for the loop and the virtual robot (0: normal)",
    )
    args = p.parse_args()
    results = []
    for protocol in args.protocols.split(","):
        print(
            f"soak: {protocol}, {args.cycles} cycles at {args.rate:g} Hz, "
            f"SCHED_FIFO {args.realtime_priority or 'off'}",
            flush=True,
        )
        results.append(soak(protocol, args.cycles, args.rate, args.realtime_priority))
    out = {
        **stamp(),
        "command": "python " + " ".join(sys.argv),
        "results": results,
    }
    print(
        "\n| protocol | cycles | period p50 | p99 | max | p99 period error | missed "
        "| read p50/p99 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['protocol']} | {r['cycles']} | {r['period_p50_ms']:.2f} ms | "
            f"{r['period_p99_ms']:.2f} ms | {r['period_max_ms']:.2f} ms | "
            f"{r['period_error_p99_ms']:.2f} ms | "
            f"{r['missed']} ({100 * r['missed_fraction']:.3f} %) | "
            f"{r['read_p50_ms']:.2f} / {r['read_p99_ms']:.2f} ms |"
        )
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
