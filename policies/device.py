"""Where the learner runs: ``run.device`` (the CPU, or a CUDA GPU of the driver).

Only the learner moves (networks, normaliser, temperature, optimiser state, the update's
batches). Everything around it stays where it was, so a run on a GPU is the same run:

* the environments step on the CPU and hand numpy to the policy, which takes its inputs
  to the device and its actions back (:func:`on`, :func:`to_numpy`);
* exploration noise is drawn from the algorithm's CPU generators and then moved, so the
  random streams (and the replay's sampling) are those of a CPU run;
* checkpoints load onto the CPU (``map_location="cpu"``) and are moved after, so a run
  trained on a GPU resumes, evaluates and exports on a machine without one;
* Ray rollout workers get CPU copies of the acting networks (:func:`cpu_copy`): workers
  have no GPU, and a CUDA tensor does not unpickle there.

An algorithm supports a device other than the CPU by having ``to_device(device)``; the
runner calls it through :func:`place_learner`, which refuses the others with a
:class:`~metagrasp.errors.ConfigError` instead of training them on the CPU behind the
user's back. ``metagrasp eval`` and ``metagrasp export`` always run on the CPU.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from metagrasp.errors import ConfigError
from metagrasp.policies.config import check_device_name


def resolve_device(name: str) -> torch.device:
    """The torch device ``run.device`` names on this machine.

    Raises:
        ConfigError: a malformed name, or a GPU asked for where torch sees none (or not
            that many), naming what to do instead.
    """
    check_device_name(name)
    if name == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if name == "auto":
        return torch.device("cuda" if available else "cpu")
    if not available:
        raise ConfigError(
            f"run.device={name!r} but torch sees no CUDA GPU here (torch "
            f"{torch.__version__}, a CPU build or no driver); train with run.device=cpu "
            "(or auto), or install a CUDA build of torch on a machine with a GPU"
        )
    index = int(name.split(":")[1]) if ":" in name else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"run.device={name!r} but this machine has {torch.cuda.device_count()} GPU(s) "
            "(cuda:0 is the first); pick one of them"
        )
    return torch.device("cuda", index)


def place_learner(algo: Any, name: str) -> torch.device:
    """Move an algorithm's learner to the device ``run.device`` names.

    The CPU needs nothing. Other devices need the algorithm's ``to_device(device)``.

    Returns:
        The resolved device.

    Raises:
        ConfigError: the device is unusable here, or the algorithm's learner runs on the
            CPU only.
    """
    device = resolve_device(name)
    if device.type == "cpu":
        return device
    move = getattr(algo, "to_device", None)
    if move is None:
        raise ConfigError(
            f"run.device={name!r}: the learner of {algo.name!r} runs on the CPU only (it has "
            "no to_device method; every registered algorithm has one); use run.device=cpu"
        )
    move(device)
    return device


def on(x: Any, device: torch.device, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
    """``x`` (numpy or tensor) as a tensor on ``device`` (no copy when already there)."""
    return torch.as_tensor(x, dtype=dtype).to(device)


def batch_to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A replay batch (tensors in host memory) on ``device``."""
    return {k: v.to(device) for k, v in batch.items()}


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor's values as numpy, from whichever device holds them."""
    return t.detach().cpu().numpy()


def cpu_copy(obj: Any) -> Any:
    """A shallow copy of ``obj`` whose modules and tensors on another device are CPU
    copies, and whose ``device`` attribute (if any) says so; ``obj`` itself is unchanged.

    The acting networks an algorithm sends to rollout workers go through this: a GPU
    learner's networks would not unpickle on a worker without CUDA.
    """
    out = copy.copy(obj)
    moved: dict[int, Any] = {}  # one copy per object: aliases (RL²'s step is its net) stay aliases
    for key, value in vars(obj).items():
        if isinstance(value, torch.nn.Module) and _off_cpu(value):
            if id(value) not in moved:
                moved[id(value)] = copy.deepcopy(value).to("cpu")
            setattr(out, key, moved[id(value)])
        elif isinstance(value, torch.Tensor) and value.device.type != "cpu":
            setattr(out, key, value.detach().to("cpu"))
    # A device attribute says where the copy acts (a property reads it off the networks).
    if isinstance(vars(obj).get("device"), torch.device):
        out.device = torch.device("cpu")
    return out


def _off_cpu(module: torch.nn.Module) -> bool:
    tensors = [*module.parameters(), *module.buffers()]
    return any(t.device.type != "cpu" for t in tensors)
