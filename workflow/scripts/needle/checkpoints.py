"""Checkpoints: what a saved network records, atomic saving, and safe, explicit loading.

A checkpoint is a dict of tensors and plain metadata, so it loads with
``torch.load(..., weights_only=True)`` (no code runs when reading a file). It records the
architecture it was made for (never loaded into another network), its kind (an arm), and for dense
weights the layout of their entries (`needle.embed.DENSE_LAYOUT`). Every failure to load becomes
one line that names the file and what to do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from needle import embed, models
from needle.atomic import atomic_path
from needle.errors import NeedleError
from needle.names import DENSE_ARMS, EFCN

FORMAT = "needle-checkpoint-v1"
RERUN = "delete it and rerun the rule that makes it (snakemake --forcerun <rule>)"


def architecture(model: str, width: int, data) -> dict[str, Any]:
    """What a checkpoint records so that it is never loaded into a different network."""
    return {
        "model": model,
        "in_channels": data.in_channels,
        "image_size": data.image_size,
        "num_classes": data.num_classes,
        "width": width if model == "skinny" else None,
    }


def build_cnn(arch: dict[str, Any]) -> torch.nn.Sequential:
    return models.build_cnn(
        arch["model"], arch["in_channels"], arch["image_size"], arch["num_classes"], arch["width"]
    )


def payload(kind: str, arch: dict[str, Any], model: torch.nn.Module, **metadata) -> dict:
    """A checkpoint of ``model``: its weights, what it is (kind = an arm, architecture, and for a
    dense arm the layout of its weights) and ``metadata`` (plain values and state dicts only)."""
    content = {"format": FORMAT, "kind": kind, "architecture": arch, **metadata}
    if kind in DENSE_ARMS:
        content["dense_layout"] = embed.DENSE_LAYOUT
    content["model"] = model.state_dict()
    return content


def save(content: dict[str, Any], path: str | os.PathLike) -> None:
    """Save a dict of tensors and plain values atomically. Written through a Python file object,
    so that a full disk is an OSError that needle.atomic names (torch's own file writer reports
    it as an unrelated 'unexpected pos')."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        torch.save(content, handle)


def load(path: str | os.PathLike, *, what: str = "checkpoint", fix: str = RERUN) -> dict[str, Any]:
    """Load a file written by :func:`save`, turning every failure into one clear line."""
    path = Path(path)
    if not path.is_file():
        raise NeedleError(f"{what} {path} does not exist: {fix}")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, bad pickle, not a torch file ...
        reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise NeedleError(
            f"{what} {path} is unreadable (truncated or corrupt: {reason}); {fix}"
        ) from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise NeedleError(f"{what} {path} is not a needle checkpoint ({FORMAT}); {fix}")
    return content


def check_architecture(content: dict[str, Any], expected: dict[str, Any], path) -> None:
    """Refuse a checkpoint whose recorded architecture differs from the configured one."""
    recorded = content.get("architecture", {})
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


def check_dense_layout(content: dict[str, Any], path) -> None:
    """Refuse dense weights whose entries are laid out differently from what this code reads."""
    if content.get("dense_layout") != embed.DENSE_LAYOUT:
        raise NeedleError(
            f"{path} stores its dense layers in another layout "
            f"({content.get('dense_layout')!r}, this code reads {embed.DENSE_LAYOUT!r}); {RERUN}"
        )


def load_state_dict(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], path) -> None:
    """``module.load_state_dict`` with a one-line error when names or shapes disagree."""
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as error:
        lines = str(error).splitlines()
        detail = lines[1].strip() if len(lines) > 1 else lines[0]
        raise NeedleError(
            f"checkpoint {path} does not fit the configured network ({detail[:160]}); "
            "fix the config or delete the checkpoint to retrain"
        ) from None


def _check_epoch(content: dict[str, Any], key: str, relax_time: int, path) -> None:
    if content.get(key) != relax_time:
        raise NeedleError(
            f"checkpoint {path} holds {key} {content.get(key)}, not relax time {relax_time}; "
            "pass the file of that relax time"
        )


def load_cnn(path, arch: dict[str, Any], device, *, relax_time: int | None = None):
    """The CNN of a CNN checkpoint (and the checkpoint's content), optionally checked to be the
    checkpoint of ``relax_time``."""
    content = load(path, what="CNN checkpoint")
    check_architecture(content, arch, path)
    if relax_time is not None:
        _check_epoch(content, "epoch", relax_time, path)
    cnn = build_cnn(arch)
    load_state_dict(cnn, content["model"], path)
    return cnn.to(device), content


def load_embedded(path, arch: dict[str, Any], arm: str, relax_time: int, device):
    """The eFCN or eLCN an embed job saved (and the file's content), checked to be the embedding
    of ``arm`` at ``relax_time`` in this code's dense layout."""
    content = load(path, what=f"embedded {arm}")
    check_architecture(content, arch, path)
    if content.get("kind") != arm:
        raise NeedleError(f"{path} holds a {content.get('kind')!r}, not the {arm}; {RERUN}")
    _check_epoch(content, "relax_time", relax_time, path)
    check_dense_layout(content, path)
    skeleton = build_cnn(arch)
    net = embed.to_efcn(skeleton) if arm == EFCN else embed.to_elcn(skeleton)
    load_state_dict(net, content["model"], path)
    return net.to(device), content
