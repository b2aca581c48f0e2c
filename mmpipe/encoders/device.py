"""Which torch device an encoder runs on.

Results must not depend on the device (the rule params leave it out), so this
only decides where the work happens, and fails early when the config asks for a
GPU the machine does not have rather than silently running on the CPU.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from mmpipe.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_SPEC = re.compile(r"^(auto|cpu|cuda(?::(\d+))?)$")


def names_cuda(spec: str | None) -> bool:
    """Whether the config's ``device`` asks for CUDA by name (``cuda``, ``cuda:N``): the
    jobs that would run a network then ask the scheduler for a GPU (``auto`` asks none)."""
    return str(spec or "auto").strip().lower().startswith("cuda")


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` → ``cuda`` when available else ``cpu``; ``cpu``; ``cuda`` / ``cuda:N`` checked."""
    import torch  # here: the workflow's planning reads names_cuda, and imports no torch

    spec = (spec or "auto").strip().lower()
    m = _SPEC.match(spec)
    if m is None:
        raise ConfigError(f"device {spec!r} is not one of auto, cpu, cuda, cuda:N")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} requested but CUDA is not available on this machine "
                          "(set device: auto or cpu)")
    index = int(m.group(2)) if m.group(2) is not None else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"device {spec!r} requested but this machine has {count} CUDA "
                          f"device(s) (cuda:0..cuda:{count - 1})")
    return torch.device(f"cuda:{index}")
