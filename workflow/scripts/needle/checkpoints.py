"""Checkpoints: atomic saving and safe, explicit loading.

Checkpoints hold only tensors and plain metadata, so they load with
``torch.load(..., weights_only=True)`` (no arbitrary code runs when reading a file). Every failure
to load becomes one line that names the file and what to do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from needle.atomic import atomic_path, atomic_write_text  # noqa: F401  (re-exported)
from needle.errors import NeedleError

FORMAT = "needle-checkpoint-v1"


def save(payload: dict[str, Any], path: str | os.PathLike) -> None:
    """Save a dict of tensors and plain values atomically."""
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


def load(
    path: str | os.PathLike, *, what: str = "checkpoint", fix: str | None = None
) -> dict[str, Any]:
    """Load a file written by :func:`save`, turning every failure into one clear line."""
    path = Path(path)
    fix = fix or "delete it and rerun the rule that makes it (snakemake --forcerun <rule>)"
    if not path.is_file():
        raise NeedleError(f"{what} {path} does not exist: {fix}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, bad pickle, not a torch file ...
        reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise NeedleError(
            f"{what} {path} is unreadable (truncated or corrupt: {reason}); {fix}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise NeedleError(f"{what} {path} is not a needle checkpoint ({FORMAT}); {fix}")
    return payload


def check_architecture(
    payload: dict[str, Any], expected: dict[str, Any], path: str | os.PathLike
) -> None:
    """Refuse a checkpoint whose recorded architecture differs from the configured one."""
    recorded = payload.get("architecture", {})
    differences = [
        f"{key}={recorded.get(key)!r} (config says {value!r})"
        for key, value in expected.items()
        if recorded.get(key) != value
    ]
    if differences:
        raise NeedleError(
            f"checkpoint {path} was made for another architecture: {', '.join(differences)}; "
            "fix the config or delete the checkpoint to retrain"
        )


def load_state_dict(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], path) -> None:
    """``module.load_state_dict`` with a one-line error when names or shapes disagree."""
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as error:
        first = str(error).splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise NeedleError(
            f"checkpoint {path} does not fit the configured network ({detail[:160]}); "
            "fix the config or delete the checkpoint to retrain"
        ) from None
