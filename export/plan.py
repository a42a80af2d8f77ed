"""What an algorithm hands the exporter: the seam every algorithm implements once.

An algorithm becomes exportable by adding one method::

    def export_modules(self) -> ExportPlan: ...

returning self-contained ``nn.Module`` s (observation normaliser, action limits and any
constants baked in) for the graph roles of the device runtime, plus the JSON-able facts
the runtime needs to drive them. The roles, their input and output names and what the
runtime does with them are the contract in :mod:`metagrasp.adapt.runtime`'s docstring;
in short:

* ``policy`` (required): ``obs`` [, ``task``] [, state entries] ->
  ``action`` [, ``mean``, ``log_std``] [, ``next.<state>``];
* ``adapt``: state entries + episode fields (``obs``, ``actions``, ``rewards``,
  ``next_obs``, ``dones``, ``mask``, ``advantages``) -> ``next.<state>``;
* ``critic``: ``obs`` + state entries -> ``value`` (only if ``adapt`` takes advantages);
* the ``init`` graph is written by the exporter from :attr:`ExportPlan.init_state`.

How the planned algorithms map onto it:

* MAML family (CAVIA here; ANIL alike with ``w_out``/``b_out`` state entries): state =
  the adaptable parameters; ``adapt`` = the explicit-backward inner loop
  (:func:`metagrasp.policies.functional.inner_update_explicit`); ``critic`` for GAE;
  ``adaptation = {"kind": "gradient", "restart": True, "advantages": {...}}``.
* PEARL: state = ``z`` (posterior mean; ``z_var`` too if wanted); ``adapt`` = the context
  encoder over the transitions (``obs, actions, rewards, next_obs, mask`` ->
  ``next.z``, ``next.z_var``) with ``restart: True``; ``policy`` takes ``obs, z``.
* RL²: state = ``hidden``, ``prev_reward``, ``prev_done`` (the runtime's ``observe``
  writes the last two after every step) and, if the step takes it, ``prev_action``
  (which the graph itself returns as ``next.prev_action``); ``policy`` is the single
  step returning ``next.hidden``; no ``adapt`` graph (the hidden state carries across
  episodes of a task; ``init_state()`` starts a new task).
* RMA: state = ``history`` (the last H observations); ``policy`` shifts it in the graph
  and returns ``next.history``; ``reward_free: True``.
* sac-grip: state = ``grip`` (N per pad), read by ``policy``; no ``adapt`` graph: the
  adaptation kind ``grip_search`` is run by the runtime in numpy on the episodes'
  ``lifted``/``crushed`` (and ``raised``) flags (``episode_fields``; the search's
  settings, and a prior's windows, in ``settings``).

Every graph also gives a ``reference``: the *training-side* computation with the same
inputs and outputs (e.g. the autograd inner loop for ``adapt``), and a ``sample`` of
random inputs, so the exporter checks parity ONNX vs training code on any algorithm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

Sampler = Callable[[int, np.random.Generator], dict[str, np.ndarray]]
"""``sample(n, rng)``: ``n`` random inputs of a graph (n rows / members), by input name."""


@dataclass
class GraphSpec:
    """One graph of a bundle: a traceable module and how to check it."""

    role: str
    """Graph role: ``policy``, ``adapt``, ``critic`` (see the module docstring)."""
    module: nn.Module
    """Self-contained module; ``forward`` takes the inputs positionally, in order."""
    inputs: dict[str, torch.Tensor]
    """Example inputs by ONNX input name, in ``forward``'s argument order."""
    outputs: tuple[str, ...]
    """ONNX output names, in the order ``forward`` returns them."""
    dynamic_axes: dict[str, dict[int, str]]
    """Dynamic axes per input/output name (members, batch, time)."""
    sample: Sampler
    """Random inputs for the parity check."""
    reference: Callable[..., tuple[torch.Tensor, ...]] | None = None
    """Training-side function with the same inputs/outputs; None = the module itself."""
    quantizable: bool = False
    """Whether ``--fp16``/``--int8`` apply to this graph (the policy; never adaptation)."""


@dataclass
class ExportPlan:
    """Everything an algorithm exports; the result of ``Algorithm.export_modules()``."""

    algorithm: str
    """Registered algorithm name."""
    graphs: list[GraphSpec]
    """The graphs; exactly one has role ``policy``."""
    init_state: dict[str, torch.Tensor] = field(default_factory=dict)
    """The unadapted state, one member ``(1, ...)``, by state entry name."""
    adaptation: dict[str, Any] = field(default_factory=lambda: {"kind": "none"})
    """JSON facts for the runtime and the user: ``kind`` (none, gradient, latent,
    recurrent, history), ``reward_free``, ``restart``, ``episode_fields``,
    ``advantages`` ({gamma, lambda, normalize}) and ``settings`` (step sizes, steps)."""
    exploration: str = "none"
    """``gaussian`` when the policy graph outputs ``mean`` and ``log_std``."""
    uses_task: bool = False
    """The policy takes the privileged task vector as ``task`` (oracles only)."""

    def __post_init__(self) -> None:
        roles = [g.role for g in self.graphs]
        if roles.count("policy") != 1 or len(set(roles)) != len(roles):
            raise ValueError(f"an export plan needs one policy graph and unique roles: {roles}")
        if "init" in roles:
            raise ValueError("the init graph is written from ExportPlan.init_state")

    def graph(self, role: str) -> GraphSpec:
        """The graph of a role."""
        return next(g for g in self.graphs if g.role == role)
