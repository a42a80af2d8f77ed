"""Typed exceptions shared by every part of metagrasp.

Every error a user can trigger with bad input derives from :class:`MetagraspError`, so
the CLI can print its message (which names the problem and the fix) without a traceback.
"""

from __future__ import annotations


class MetagraspError(Exception):
    """Base class of every error metagrasp raises on bad input or a failed precondition."""


class ConfigError(MetagraspError, ValueError):
    """A config file or dict is malformed: unknown field, wrong type, or value out of range."""


class UnknownNameError(MetagraspError, KeyError):
    """A name (environment, task family, split, algorithm, preset...) is not registered.

    Subclasses ``KeyError`` for callers that look names up in dicts, but formats its
    message like a ``ValueError`` (``KeyError`` would quote it).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TaskParamError(MetagraspError, ValueError):
    """Task parameters are outside the physically valid range or malformed."""


class CheckpointError(MetagraspError):
    """A checkpoint is missing, truncated, corrupt, or from another algorithm."""


class TrainingError(MetagraspError, FloatingPointError):
    """Training diverged (NaN/inf loss or metric); the last good checkpoint is kept."""


class SamplerError(MetagraspError, RuntimeError):
    """Episodes could not be collected: Ray is missing, its cluster is unreachable, or a
    rollout worker kept dying."""
