"""Probe (not a benchmark): sac-grip's oracle line with its grip placed at ``p`` in the
log window [force that lifts the object, min(crush limit, 20 N)] instead of 0.5 (the
geometric mean, :func:`metagrasp.sim.scripted.privileged_grip`). Run from ``benchmarks/``:

    python ../docs/benchmarks/grasp-lift-grip/carry/grip-placement/grip_place_probe.py \\
        0.8 val OUT.json RUNS/sac-grip-s0 RUNS/sac-grip-s1 RUNS/sac-grip-s2
"""

import json
import sys

import failure_modes as fm
import numpy as np

from metagrasp.policies import grip_search as gs
from metagrasp.sim.scripted import GRIP_FORCE_MIN
from metagrasp.sim.tasks import GRIP_FORCE_MAX, grip_window


def main() -> None:
    p, split, out, runs = float(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]

    def place(self, task):
        req, crush, gain = grip_window(task)
        want = req ** (1 - p) * np.minimum(crush, GRIP_FORCE_MAX) ** p
        return np.clip(want / gain, GRIP_FORCE_MIN, GRIP_FORCE_MAX)

    gs.GripSearch._train_grips = place  # the oracle line's grip (act_with=oracle)
    res = fm.measure(runs, split, [0, 1], 0, {"act_with": "oracle"}, False)
    print(fm.table(f"oracle p={p}", res))
    with open(out, "w") as f:
        json.dump({"p": p, "split": split, "runs": runs, **res}, f, indent=1)


if __name__ == "__main__":  # vector-env workers are spawned: guard the entry point
    main()
