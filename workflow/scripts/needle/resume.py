"""The resume state of one training run: what is saved, when, what it must match, how it is cleared.

A run keeps its state in its own folder (``<run folder>/resume/``), which is never a declared
output, so Snakemake does not delete it when it reruns an interrupted job:

    identity.txt             what the state was made from: data, network, start file, settings
    state.pt                 rewritten after every epoch: weights, optimiser state, metrics rows
    checkpoints/epoch<t>.pt  CNN checkpoints, staged here until the run publishes them

State made from anything else than the current run's identity is cleared, never continued. No
random state is saved: every epoch's randomness (batch order, dropout) is a function of the seed
and the epoch alone (needle.training), so a resumed run ends bit-identical to an uninterrupted one
on the same machine. Only files this module writes are ever removed: a mistyped --resume-dir
cannot cost anyone their files.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
from pathlib import Path

import torch

from needle import checkpoints
from needle.atomic import atomic_path, atomic_write_text, remove_stale_temporaries
from needle.errors import NeedleError
from needle.names import EPOCH_COLUMNS

STATE, IDENTITY, STAGED = "state.pt", "identity.txt", "checkpoints"


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file (a run's start checkpoint is part of its identity)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def data_fingerprint(data) -> str:
    """Cheap identity of the tensors a run sees (subsets, canvas placement, normalisation)."""

    def split(images: torch.Tensor, labels: torch.Tensor) -> str:
        label_digest = hashlib.sha256(labels.cpu().numpy().tobytes()).hexdigest()[:16]
        # float32 sums (no float64 copy of the data on the GPU) printed to 6 digits, so that
        # another thread count's summation order cannot change the identity.
        per_image = images.flatten(1).sum(1).double()
        weights = torch.arange(1, len(per_image) + 1, dtype=torch.float64, device=images.device)
        return (
            f"{tuple(images.shape)} labels {label_digest} sum {per_image.sum().item():.6e} "
            f"weighted {(per_image * weights).sum().item():.6e}"
        )

    return (
        f"{data.name} train {split(data.train_x, data.train_y)}; "
        f"validation {split(data.validation_x, data.validation_y)}; "
        f"test {split(data.test_x, data.test_y)}"
    )


def run_identity(**parts) -> str:
    """One line per part of what a run's state depends on (settings, data, start file ...)."""
    return "".join(f"{key}: {value!r}\n" for key, value in parts.items())


class ResumeState:
    """The resume folder of one run, claimed for one identity (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike, identity: str, *, log=sys.stderr):
        self.folder, self.identity, self.log = Path(folder), identity, log
        self.state_path = self.folder / STATE
        self.staged = self.folder / STAGED

    @classmethod
    def claim(cls, folder: str | os.PathLike, identity: str, *, log=sys.stderr) -> ResumeState:
        """The folder's state when it was made with ``identity``; otherwise the folder cleared and
        marked with ``identity``, so that a run interrupted and rerun after its data, network,
        start checkpoint or settings changed starts afresh."""
        resume = cls(folder, identity, log=log)
        remove_stale_temporaries(resume.state_path)
        marker = resume.folder / IDENTITY
        if not (marker.is_file() and marker.read_text(encoding="utf-8") == identity):
            if resume.state_path.exists() or list(resume.staged.glob("epoch*.pt")):
                resume._say(f"ignoring resume state in {resume.folder}: made from other inputs")
            resume.clear()
            atomic_write_text(marker, identity)
        return resume

    # -- the state after each epoch ----------------------------------------------------------------
    def save(self, rows: list[dict], model: torch.nn.Module, optimizer) -> None:
        """Record a finished epoch; a kill at any moment leaves the previous epoch's state."""
        state = {
            "format": checkpoints.FORMAT,
            "identity": self.identity,
            "rows": rows,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
        }
        checkpoints.save(state, self.state_path)

    def restore(self, model: torch.nn.Module, optimizer) -> list[dict] | None:
        """Load the saved epoch into ``model`` and ``optimizer`` and return its metrics rows, or
        None (nothing loaded) when there is no usable state."""
        if not self.state_path.exists():
            return None
        try:
            state = checkpoints.load(self.state_path, what="resume state")
        except NeedleError as error:  # a cache: when unusable, say so and start afresh
            self._say(f"ignoring resume state: {error}")
            return None
        rows = state.get("rows")
        if state.get("identity") != self.identity or not _consecutive(rows):
            self._say(f"ignoring resume state {self.state_path}: made with other settings")
            return None
        expected = {key: value.shape for key, value in model.state_dict().items()}
        if {key: value.shape for key, value in state["model"].items()} != expected:
            self._say(f"ignoring resume state {self.state_path}: it does not fit this network")
            return None
        try:  # the optimizer first: it checks its groups before it changes anything
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as error:
            self._say(f"ignoring resume state {self.state_path}: {str(error)[:200]}")
            return None
        model.load_state_dict(state["model"])
        self._say(f"resuming after epoch {rows[-1]['epoch']} from {self.state_path}")
        return list(rows)

    # -- CNN checkpoints, staged until the run publishes them --------------------------------------
    def stage_checkpoint(self, epoch: int, content: dict) -> None:
        checkpoints.save(content, self.staged / f"epoch{epoch}.pt")

    def publish_checkpoints(self, epochs, folder: str | os.PathLike) -> None:
        """Put a copy of each staged checkpoint into ``folder``, atomically, keeping the staged
        file: a kill while publishing leaves every one of them for the rerun to publish."""
        for epoch in epochs:
            source = self.staged / f"epoch{epoch}.pt"
            if not source.is_file():
                raise NeedleError(
                    f"staged checkpoint {source} is missing although the run finished; delete "
                    f"{self.folder} and rerun to train afresh"
                )
            with atomic_path(Path(folder) / source.name) as temporary:
                temporary.unlink()
                try:
                    os.link(source, temporary)  # same file system: no bytes copied
                except OSError:
                    shutil.copyfile(source, temporary)

    # -- the end of a run -------------------------------------------------------------------------
    def clear(self) -> None:
        """Remove what this module writes (and the folders once empty), nothing else."""
        ours = [
            self.state_path,
            self.folder / IDENTITY,
            *self.staged.glob("epoch*.pt"),
            *self.staged.glob(".epoch*.pt.*.tmp"),
        ]
        for path in ours:
            path.unlink(missing_ok=True)
            remove_stale_temporaries(path)
        for folder in (self.staged, self.folder):
            with contextlib.suppress(OSError):  # absent, or holds files that are not ours
                folder.rmdir()

    def _say(self, message: str) -> None:
        print(f"[needle] {message}", file=self.log, flush=True)


def _consecutive(rows) -> bool:
    """Rows of epochs 0, 1, ... of this run, in order (what save writes)."""
    since = EPOCH_COLUMNS[1]
    return (
        isinstance(rows, list)
        and bool(rows)
        and all(isinstance(row, dict) for row in rows)
        and [row.get(since) for row in rows] == list(range(len(rows)))
    )
