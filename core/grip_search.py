"""Few-shot search of the grip force from episode outcomes (numpy only, device-safe).

The rule behind ``sac-grip``'s adaptation (:mod:`metagrasp.policies.grip_search`) and the
adaptive line of ``benchmarks/scripted_grip.py``. It needs only what a robot can tell
after an episode without any reward model: was the object lifted, and was it crushed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

SEARCH_VERSION = 2
"""Version of the search rules, stamped into cached evaluations (``benchmarks/meta_rl.py``)
so that a change re-runs them: 1 up to 2026-12-01 07:25 UTC, where the first lift ended
:func:`next_grip`'s search; 2 counts every outcome. (Options such as ``retry_drops`` are
fields of the acting config, which the caches compare as well.)"""

Outcome = tuple[float, bool, bool] | tuple[float, bool, bool, bool]
"""``(grip force in N, lifted, crushed[, gripped])`` of one finished episode; ``gripped``
(both pads squeezed the object at some point) is optional."""


def fold_raised(
    outcomes: Sequence[Outcome], raised: Sequence[bool] | None, keep_raised: int
) -> list[Outcome]:
    """``outcomes`` with the drops blamed on the carry counted as lifts (``keep_raised``).

    An episode that raised the object to the lift height (``raised[i]``) and then lost it
    uncrushed had a grip that carried the object's weight: the carry failed, not the force,
    and read as a drop it sends the search to a stronger grip, which may crush a fragile
    object. Up to ``keep_raised`` such episodes at one grip count as lifts (the grip is kept);
    one more at that grip is a drop, since a grip that keeps letting the object slip on the
    way is too weak after all. ``keep_raised`` 0 returns the outcomes unchanged.

    Raises:
        ValueError: ``keep_raised`` is negative, or ``raised`` does not give one flag per
            outcome while ``keep_raised`` > 0.
    """
    return _fold(outcomes, raised, keep_raised)[0]


def _fold(
    outcomes: Sequence[Outcome], raised: Sequence[bool] | None, keep_raised: int
) -> tuple[list[Outcome], list[bool]]:
    """:func:`fold_raised`'s outcomes and, per outcome, whether it was folded."""
    if keep_raised < 0:
        raise ValueError(f"keep_raised must be >= 0, got {keep_raised}")
    if keep_raised == 0:
        return list(outcomes), [False] * len(outcomes)
    if raised is None or len(raised) != len(outcomes):
        raise ValueError(f"keep_raised needs one raised flag per outcome, got {raised!r}")
    kept: dict[float, int] = {}
    out: list[Outcome] = []
    folded: list[bool] = []
    for outcome, up in zip(outcomes, raised, strict=True):
        force, lifted, crushed, *rest = outcome
        fold = bool(up and not lifted and not crushed and kept.get(force, 0) < keep_raised)
        if fold:
            kept[force] = kept.get(force, 0) + 1
            outcome = (force, True, crushed, *rest)
        out.append(outcome)
        folded.append(fold)
    return out, folded


def next_grip(
    outcomes: Sequence[Outcome],
    start: float,
    lo: float,
    hi: float,
    retry_drops: bool = False,
    raised: Sequence[bool] | None = None,
    keep_raised: int = 0,
    raised_nudge: float = 1.0,
) -> float:
    """The grip (N) to try after ``outcomes`` (oldest first) on one object.

    Starts at ``start``; keeps a grip while it lifts the object; otherwise bisects the log
    of the force between the largest grip that dropped it and the smallest that crushed
    it, inside the gripper's range ``[lo, hi]``. Every outcome counts, also those after a
    lift: a grip that lifted once and then crushed (a borderline grip, or a judgement the
    device got wrong) is left for a gentler one. An episode whose outcome says the pads
    never squeezed the object (a miss, not a drop) says nothing about the force: its grip
    is tried again.

    With ``retry_drops``, a drop at a grip at least as strong as one that already lifted
    this object is blamed on the motion, not the force, and the grip is tried again: a
    policy that acts with sampled actions drops some objects at a grip that holds them,
    and without it such a drop sends the search to a stronger grip, which crushes a
    fragile object. A crush still counts after a lift.

    With ``keep_raised`` > 0 and each episode's ``raised`` flag, drops after the object got
    to the lift height count as lifts first (:func:`fold_raised`). With ``raised_nudge`` > 1
    such a drop is not quite a lift: the next grip is that much firmer (at most the log
    midpoint up to the weakest grip that crushed), and a crush there returns to the grip
    that carried the object.

    Raises:
        ValueError: the range is empty or ``start`` lies outside it; ``raised`` as
            :func:`fold_raised` needs it; ``raised_nudge`` < 1.
    """
    if not 0 < lo < hi or not lo <= start <= hi:
        raise ValueError(f"grip search needs 0 < lo <= start <= hi, got {lo}, {start}, {hi}")
    if not raised_nudge >= 1.0:
        raise ValueError(f"raised_nudge must be >= 1, got {raised_nudge}")
    outcomes, folded = _fold(outcomes, raised, keep_raised)
    grip, weakest_lift, carried = start, math.inf, 0.0
    for (force, lifted, crushed, *gripped), nudge in zip(outcomes, folded, strict=True):
        if lifted:
            # Kept, but not final: until 2026-12-01 the first lift ended the search, so
            # one lift the device misjudged (a missed crush) fixed the grip for good.
            grip = float(force)
            weakest_lift = min(weakest_lift, grip)
            if nudge and raised_nudge > 1.0 and grip < hi:
                carried = max(carried, grip)
                grip = min(grip * raised_nudge, math.sqrt(grip * hi))
            continue
        if gripped and not gripped[0] and not crushed:
            continue  # a miss: the same grip again
        if retry_drops and not crushed and force >= weakest_lift:
            grip = float(force)  # this force lifted it before: the motion failed
            continue
        if crushed:
            hi = min(hi, force)
        else:
            lo = max(lo, force)
        grip = math.sqrt(lo * hi) if lo < hi else float(force)
        if crushed and lo < carried < hi:
            grip = max(grip, carried)  # the nudge crushed it: back to the grip that carried
    return float(grip)


def next_grip_prior(
    outcomes: Sequence[Outcome],
    windows: np.ndarray,
    start: float,
    lo: float,
    hi: float,
    fail_rate: float = 0.25,
    grid_points: int = 121,
    retry_drops: bool = False,
    raised: Sequence[bool] | None = None,
    keep_raised: int = 0,
    raised_nudge: float = 1.0,
) -> float:
    """The grip (N) most likely to lift the object after ``outcomes``, under a prior of
    grip windows learned from training objects (a Bayesian version of :func:`next_grip`).

    ``windows`` ``(n, 2)`` holds, per training object, the lowest commanded grip that
    lifts it and the highest that does not crush it. Each outcome reweights them: a crush
    at ``g`` means ``g`` is above the window; a drop means ``g`` is below it, or was inside
    it and the motion failed (``fail_rate``, the share of episodes with the right grip that
    fail anyway); a miss (``gripped`` False) says nothing. The next grip maximises the
    weighted share of windows that contain it, on a log grid over ``[lo, hi]``; among equal
    maxima, the middle one. After a lift, and if no window fits the outcomes,
    :func:`next_grip` decides (with ``retry_drops`` passed on). ``raised``,
    ``keep_raised`` and ``raised_nudge`` as in :func:`next_grip`.

    Raises:
        ValueError: as :func:`next_grip`, or ``windows`` is not ``(n, 2)`` with n > 0.
    """
    fallback = next_grip(outcomes, start, lo, hi, retry_drops, raised, keep_raised, raised_nudge)
    outcomes = fold_raised(outcomes, raised, keep_raised)
    w_lo, w_hi = _windows(windows)
    # Misses say nothing about the force (the same grip again, as next_grip does).
    told = [o for o in outcomes if not (len(o) > 3 and not o[3] and not o[2])]
    if not told or any(o[1] for o in told):
        return fallback
    weight = np.ones(len(w_lo))
    for force, _lifted, crushed, *_ in told:
        above, below = force > w_hi, force < w_lo
        if crushed:
            weight *= np.where(above, 1.0, _NOISE)
        else:  # dropped: too weak, or inside the window and the motion failed
            weight *= np.where(below, 1.0, np.where(above, _NOISE, fail_rate))
    if weight.max() <= _NOISE:
        return fallback  # the outcomes fit no training object: fall back to bisection
    grid = np.geomspace(lo, hi, grid_points)
    inside = (grid[:, None] >= w_lo[None]) & (grid[:, None] <= w_hi[None])
    score = inside.astype(np.float64) @ weight
    best = np.flatnonzero(score >= score.max() * (1 - 1e-9))
    return float(grid[best[len(best) // 2]])


_NOISE = 1e-3
"""Likelihood of an outcome the windows rule out (a crush below the window, ...): small,
not zero, so that one unlikely episode does not erase every window."""


def _windows(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = np.asarray(windows, np.float64)
    if w.ndim != 2 or w.shape[1] != 2 or len(w) == 0 or not np.isfinite(w).all():
        raise ValueError(f"grip windows must be a finite (n, 2) array, got shape {w.shape}")
    return w[:, 0], w[:, 1]
