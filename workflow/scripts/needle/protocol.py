"""The three training stages of the protocol: CNN, relaxed eFCN/eLCN at t_w, standard FCN.

Each function does one stage's whole job (build, train, write its declared outputs atomically) so
that a stage script only parses arguments. Resumable state lives in ``resume_dir``, which is never a
declared output, so Snakemake does not delete it when it reruns an interrupted job.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from needle import checkpoints, deviation, embed, models
from needle import data as datasets
from needle.atomic import remove_stale_temporaries
from needle.device import check_fits, training_bytes
from needle.errors import NeedleError
from needle.schedule import checkpoint_epochs
from needle.training import TrainConfig, Trainer, TrainingDiverged, evaluate

ARMS = ("efcn", "elcn")


@dataclass(frozen=True)
class DataSpec:
    dataset: str
    data_dir: str = "resources/data"
    canvas_size: int = 0
    train_size: int | None = None
    test_size: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class ModelSpec:
    model: str = "skinny"
    width: int = 64


def load_data(spec: DataSpec, device: torch.device):
    return datasets.load_dataset(
        spec.dataset,
        spec.data_dir,
        train_size=spec.train_size,
        test_size=spec.test_size,
        canvas_size=spec.canvas_size,
        seed=spec.seed,
        device=device,
    )


def architecture(model_spec: ModelSpec, data) -> dict:
    """What a checkpoint records so that it is never loaded into a different network."""
    return {
        "model": model_spec.model,
        "in_channels": data.in_channels,
        "image_size": data.image_size,
        "num_classes": data.num_classes,
        "width": model_spec.width if model_spec.model == "skinny" else None,
    }


def build_cnn(arch: dict) -> torch.nn.Sequential:
    return models.build_cnn(
        arch["model"],
        arch["in_channels"],
        arch["image_size"],
        arch["num_classes"],
        arch["width"] or 0,
    )


def write_metrics(rows: list[dict], path: str | os.PathLike) -> None:
    """Per-run metrics as CSV (one row per epoch), written atomically."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    checkpoints.atomic_write_text(path, buffer.getvalue())


def _checkpoint_payload(kind: str, arch: dict, epoch: int, model, optimizer=None, **extra) -> dict:
    payload = {
        "format": checkpoints.FORMAT,
        "kind": kind,
        "architecture": arch,
        "epoch": epoch,
        "model": model.state_dict(),
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    payload.update(extra)
    return payload


# -- resumable state -------------------------------------------------------------------------------------
RESUME_INPUTS = "inputs.txt"


def data_fingerprint(data) -> str:
    """Cheap identity of the tensors a run trains on (subset, canvas placement, normalisation)."""
    labels = hashlib.sha256(data.train_y.cpu().numpy().tobytes()).hexdigest()[:16]
    # float32 sums (no float64 copy of the data on the GPU), printed to 6 digits so that another
    # thread count's summation order cannot change the identity.
    per_image = data.train_x.flatten(1).sum(1).double()
    weights = torch.arange(1, len(per_image) + 1, dtype=torch.float64, device=per_image.device)
    return (
        f"{data.name} train{tuple(data.train_x.shape)} test{tuple(data.test_x.shape)} labels {labels} "
        f"sum {per_image.sum().item():.6e} weighted {(per_image * weights).sum().item():.6e} "
        f"test sum {data.test_x.sum().item():.6e}"
    )


def _publish(source: Path, path: Path) -> None:
    """Atomically put a copy of ``source`` at ``path``, keeping ``source``: when a job is killed while
    publishing its staged files, the rerun still has all of them to publish."""
    with checkpoints.atomic_path(path) as temporary:
        try:
            temporary.unlink()
            os.link(source, temporary)  # same file system: no bytes copied
        except OSError:
            shutil.copyfile(source, temporary)


def _clear_resume_dir(resume_dir: Path) -> None:
    """Remove what this module puts into ``resume_dir`` (and the folder once empty), nothing else:
    a mistyped --resume-dir must never cost a user their files."""
    staged = resume_dir / "checkpoints"
    ours = [
        resume_dir / "state.pt",
        resume_dir / RESUME_INPUTS,
        *staged.glob("epoch*.pt"),
        *staged.glob(".epoch*.pt.*.tmp"),
    ]
    for path in ours:
        path.unlink(missing_ok=True)
        remove_stale_temporaries(path)
    for folder in (staged, resume_dir):
        with contextlib.suppress(OSError):  # absent, or holds files that are not ours
            folder.rmdir()


def _claim_resume_dir(resume_dir: Path, inputs: str, log) -> None:
    """Keep resume state only when it was made from the same inputs (data, network, checkpoint).

    The trainer's own fingerprint covers the optimiser settings; this covers what it cannot see, so
    that a run interrupted, then rerun after the config or the CNN changed, starts afresh instead of
    continuing from weights trained on something else.
    """
    marker = resume_dir / RESUME_INPUTS
    remove_stale_temporaries(resume_dir / "state.pt")
    recorded = marker.read_text() if marker.is_file() else None
    if recorded != inputs:
        if (resume_dir / "state.pt").exists():
            print(
                f"[needle] ignoring resume state in {resume_dir}: made from other data, network or checkpoint",
                file=log,
            )
        _clear_resume_dir(resume_dir)
        checkpoints.atomic_write_text(marker, inputs)


def _run_or_clean_up(trainer: Trainer, resume_dir: Path) -> list[dict]:
    """``trainer.run()``; a divergence that fails the run also drops its staged files, so a failed
    job leaves nothing behind but its log."""
    try:
        return trainer.run()
    except TrainingDiverged:
        _clear_resume_dir(resume_dir)
        raise


# -- stage 1: the CNN ----------------------------------------------------------------------------------
def train_cnn(
    data,
    arch: dict,
    config: TrainConfig,
    *,
    checkpoint_dir,
    metrics_path,
    resume_dir,
    checkpoint_points: int = 20,
    log=sys.stderr,
) -> list[dict]:
    """Train the CNN; save weights + optimiser at epoch 0 and every log-spaced epoch."""
    resume_dir = Path(resume_dir)
    staged = resume_dir / "checkpoints"
    epochs_to_save = checkpoint_epochs(config.epochs, checkpoint_points)
    _claim_resume_dir(
        resume_dir, f"cnn {arch} checkpoints {epochs_to_save}\n{data_fingerprint(data)}\n", log
    )
    torch.manual_seed(config.seed)
    cnn = build_cnn(arch).to(data.train_x.device)

    def save_checkpoint(epoch, model, optimizer):
        # Staged outside the declared outputs: a rerun after a kill keeps the earlier ones.
        checkpoints.save(
            _checkpoint_payload("cnn", arch, epoch, model, optimizer), staged / f"epoch{epoch}.pt"
        )

    trainer = Trainer(
        cnn,
        data,
        config,
        run_name="cnn",
        on_checkpoint=save_checkpoint,
        checkpoint_at=tuple(epochs_to_save),
        state_path=resume_dir / "state.pt",
        log=log,
    )
    rows = _run_or_clean_up(trainer, resume_dir)
    if rows[-1]["diverged"]:
        _clear_resume_dir(resume_dir)  # a rerun must train afresh, not resume into the same NaN
        raise NeedleError(
            f"the CNN diverged at epoch {rows[-1]['epoch']}: lower cnn.lr or raise cnn.batch_size "
            "(no relax run can start from a diverged CNN, so on_divergence: record does not apply to it)"
        )
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    for epoch in epochs_to_save:
        # Copies, not moves: a kill in this loop must leave every staged file for the rerun.
        _publish(staged / f"epoch{epoch}.pt", checkpoint_dir / f"epoch{epoch}.pt")
    write_metrics(rows, metrics_path)
    trainer.clear_state()
    _clear_resume_dir(Path(resume_dir))
    return rows


def load_cnn_checkpoint(path, arch: dict, device) -> tuple[torch.nn.Sequential, dict]:
    payload = checkpoints.load(path, what="CNN checkpoint")
    checkpoints.check_architecture(payload, arch, path)
    cnn = build_cnn(arch)
    checkpoints.load_state_dict(cnn, payload["model"], path)
    return cnn.to(device), payload


# -- what a dense run logs besides loss and accuracy -----------------------------------------------------
class DenseProbe:
    """Deviation from the CNN subspace, distance travelled, and the CNN read back from the projection."""

    def __init__(self, net, cnn_template, data, eval_batch_size: int, precision: str):
        self.cnn_template, self.data = cnn_template, data
        self.eval_batch_size, self.precision = eval_batch_size, precision
        self.start = [parameter.detach().clone() for parameter in net.parameters()]
        self.start_norm = self._norm(self.start)

    @staticmethod
    def _norm(tensors) -> float:
        # per-tensor norms in float32 (no float64 copies of big weights), summed in float64
        return math.sqrt(
            sum(torch.linalg.vector_norm(tensor).double().item() ** 2 for tensor in tensors)
        )

    @torch.no_grad()
    def __call__(self, net) -> dict:
        row = {}
        travelled = self._norm(p - s for p, s in zip(net.parameters(), self.start))
        row["distance_from_embedding"] = travelled / self.start_norm
        projected = deviation.project_to_cnn(net, self.cnn_template)
        loss, accuracy = evaluate(
            projected, self.data.test_x, self.data.test_y, self.eval_batch_size, self.precision
        )
        row["projected_test_loss"], row["projected_test_accuracy"] = loss, accuracy
        for layer, parts in deviation.layer_deviations(net).items():
            for part, value in parts.items():
                row[f"{part}/{layer}"] = value
        return row


def _check_dense_fits(cnn, arm: str, config: TrainConfig, device) -> None:
    counts = embed.parameter_counts(cnn)
    parameter_bytes = counts[arm] * 4
    check_fits(
        training_bytes(parameter_bytes, momentum=config.momentum > 0),
        device,
        f"the {arm} ({counts[arm]:,} parameters)",
    )


def _dense_run(
    net,
    cnn_template,
    data,
    arch,
    config,
    *,
    run_name,
    metrics_path,
    final_weights_path,
    resume_dir,
    epoch_offset,
    log,
    arm,
    relax_time=None,
    inputs="",
    reference_model=None,
) -> list[dict]:
    _claim_resume_dir(
        Path(resume_dir),
        f"{arm} {arch} {embed.DENSE_LAYOUT}\n{inputs}{data_fingerprint(data)}\n",
        log,
    )
    probe = DenseProbe(net, cnn_template, data, config.eval_batch_size, config.precision)
    trainer = Trainer(
        net,
        data,
        config,
        run_name=run_name,
        extra_metrics=probe,
        state_path=Path(resume_dir) / "state.pt",
        epoch_offset=epoch_offset,
        reference_model=reference_model,
        log=log,
    )
    rows = _run_or_clean_up(trainer, Path(resume_dir))
    if final_weights_path:
        checkpoints.save(
            _checkpoint_payload(
                arm,
                arch,
                rows[-1]["epoch"],
                net,
                relax_time=relax_time,
                diverged=rows[-1]["diverged"],
                dense_layout=embed.DENSE_LAYOUT,
            ),
            final_weights_path,
        )
    write_metrics(rows, metrics_path)
    trainer.clear_state()
    _clear_resume_dir(Path(resume_dir))
    return rows


# -- stage 2: relax an embedded CNN ----------------------------------------------------------------------
def relax(
    data,
    arch: dict,
    config: TrainConfig,
    *,
    arm: str,
    relax_time: int,
    checkpoint_path,
    metrics_path,
    resume_dir,
    final_weights_path=None,
    log=sys.stderr,
) -> list[dict]:
    """Embed the CNN checkpoint at ``relax_time`` (eFCN or eLCN) and train it with a fresh SGD."""
    if arm not in ARMS:
        raise NeedleError(f"arm {arm!r} is not one of {', '.join(ARMS)}")
    device = data.train_x.device
    cnn, payload = load_cnn_checkpoint(checkpoint_path, arch, device)
    if payload.get("epoch") != relax_time:
        raise NeedleError(
            f"checkpoint {checkpoint_path} holds epoch {payload.get('epoch')}, not relax time {relax_time}"
        )
    _check_dense_fits(cnn, arm, config, device)
    net = (embed.to_efcn if arm == "efcn" else embed.to_elcn)(cnn).to(device)
    torch.manual_seed(config.seed)  # dropout stream of the relaxed net
    return _dense_run(
        net,
        cnn,
        data,
        arch,
        config,
        run_name=f"{arm} relaxed at epoch {relax_time}",
        metrics_path=metrics_path,
        final_weights_path=final_weights_path,
        resume_dir=resume_dir,
        epoch_offset=relax_time,
        log=log,
        arm=arm,
        relax_time=relax_time,
        reference_model=cnn,
        inputs=f"from {hashlib.sha256(Path(checkpoint_path).read_bytes()).hexdigest()}\n",
    )


# -- the baseline: a standard FCN of the eFCN's shapes ----------------------------------------------------------
def train_fcn(
    data,
    arch: dict,
    config: TrainConfig,
    *,
    metrics_path,
    resume_dir,
    final_weights_path=None,
    log=sys.stderr,
) -> list[dict]:
    """Train the standard FCN (eFCN layer shapes, PyTorch's default init) with the same optimiser."""
    device = data.train_x.device
    torch.manual_seed(config.seed)
    cnn_template = build_cnn(arch)
    _check_dense_fits(cnn_template, "fcn", config, device)
    net = embed.standard_fcn(cnn_template).to(device)
    return _dense_run(
        net,
        cnn_template.to(device),
        data,
        arch,
        config,
        run_name="standard fcn",
        metrics_path=metrics_path,
        final_weights_path=final_weights_path,
        resume_dir=resume_dir,
        epoch_offset=0,
        log=log,
        arm="fcn",
    )
