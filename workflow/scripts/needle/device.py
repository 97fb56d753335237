"""Device choice, numeric precision, and the memory check made before allocating a big eFCN.

Called from inside a job only (never while the workflow is parsed): asking for CUDA costs a driver
start, which a dry run should not pay.
"""

from __future__ import annotations

import contextlib

import torch

from needle.errors import NeedleError
from needle.names import PRECISIONS


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise NeedleError(
            f"device {requested!r} asked for but no CUDA device is visible; use --device auto or cpu"
        )
    try:
        return torch.device(requested)
    except RuntimeError:
        raise NeedleError(
            f"device {requested!r} is not a device: use auto, cpu or cuda[:N]"
        ) from None


def set_precision(precision: str) -> None:
    """fp32 is exact (the embedding's guarantees hold); tf32 and bf16 trade accuracy for speed.

    Off by default: TF32 rounds matmul inputs to 10 mantissa bits, which breaks the float32
    equality between a CNN and its eFCN.
    """
    if precision not in PRECISIONS:
        raise NeedleError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    allow_tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32


def autocast(device: torch.device, precision: str):
    """bf16 autocast for the forward pass when asked; a no-op context otherwise."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: CUDA's own count, or MemAvailable from /proc/meminfo."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # unknown: do not refuse


def training_bytes(parameter_bytes: int, *, momentum: bool) -> int:
    """Weights + gradients (+ momentum buffer) + one spare copy kept for the distance/deviation."""
    copies = 3 + (1 if momentum else 0)
    return parameter_bytes * copies


def check_fits(needed_bytes: int, device: torch.device, what: str) -> None:
    """Refuse before allocating when ``what`` cannot fit; the message says how to make it fit."""
    available = available_bytes(device)
    if needed_bytes > available:
        raise NeedleError(
            f"{what} needs about {needed_bytes / 2**30:.1f} GiB but only {available / 2**30:.1f} GiB "
            f"is free on {device}; lower width, canvas_size or batch_size, or run on a bigger device"
        )
