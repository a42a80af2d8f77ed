"""Few-shot search of the grip force from episode outcomes (numpy only, device-safe).

The rule behind ``sac-grip``'s adaptation (:mod:`metagrasp.policies.grip_search`) and the
adaptive line of ``benchmarks/scripted_grip.py``. It needs only what a robot can tell
after an episode without any reward model: was the object lifted, and was it crushed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Outcome = tuple[float, bool, bool] | tuple[float, bool, bool, bool]
"""``(grip force in N, lifted, crushed[, gripped])`` of one finished episode; ``gripped``
(both pads squeezed the object at some point) is optional."""


def next_grip(outcomes: Sequence[Outcome], start: float, lo: float, hi: float) -> float:
    """The grip (N) to try after ``outcomes`` (oldest first) on one object.

    Starts at ``start``; keeps a grip that lifted the object; otherwise bisects the log
    of the force between the largest grip that dropped it and the smallest that crushed
    it, inside the gripper's range ``[lo, hi]``. An episode whose outcome says the pads
    never squeezed the object (a miss, not a drop) says nothing about the force: its grip
    is tried again.

    Raises:
        ValueError: the range is empty or ``start`` lies outside it.
    """
    if not 0 < lo < hi or not lo <= start <= hi:
        raise ValueError(f"grip search needs 0 < lo <= start <= hi, got {lo}, {start}, {hi}")
    grip = start
    for force, lifted, crushed, *gripped in outcomes:
        if lifted:
            return float(force)
        if gripped and not gripped[0] and not crushed:
            continue  # a miss: the same grip again
        if crushed:
            hi = min(hi, force)
        else:
            lo = max(lo, force)
        grip = math.sqrt(lo * hi) if lo < hi else float(force)
    return float(grip)
