"""The stages of the protocol, one function each: build the network, train or evaluate it, write the
stage's declared outputs atomically. A stage script only parses its arguments and calls one.

    train_cnn         the CNN from init; checkpoints at epoch 0 and the log-spaced epochs (t_w)
    embed_checkpoint  the CNN checkpoint at t_w as an eFCN or eLCN, with its exactness record
    relax             one relax arm from t_w: the embedded eFCN / eLCN, or the CNN itself (control)
    train_fcn         the standard FCN (the eFCN's shapes, a fresh init)
    map_landscape     loss and accuracy along straight lines between solutions

Every training stage trains under the same `TrainConfig` and keeps its resume state in a folder
that is not a declared output (needle.resume); it is cleared once the outputs are written.
"""

from __future__ import annotations

import sys
from dataclasses import asdict

import torch

from needle import checkpoints, embed, landscape
from needle.deviation import DenseProbe
from needle.device import check_fits, set_precision, training_bytes
from needle.names import (
    CNN,
    CNN_CONTINUED,
    DIVERGED,
    EFCN,
    EMBEDDING_COLUMNS,
    FCN,
    LANDSCAPE_COLUMNS,
    run_columns,
)
from needle.resume import ResumeState, data_fingerprint, file_digest, run_identity
from needle.schedule import checkpoint_epochs
from needle.tables import write_rows
from needle.training import TrainConfig, Trainer

RECORD_COLUMNS = tuple(column for column in EMBEDDING_COLUMNS if column != "experiment")


# -- stage: the CNN ------------------------------------------------------------------------------------
def train_cnn(
    data,
    arch: dict,
    config: TrainConfig,
    *,
    checkpoint_points: int,
    checkpoint_dir,
    metrics_path,
    resume_dir,
    log=sys.stderr,
) -> list[dict]:
    """Train the CNN; weights and optimiser state at epoch 0 and every log-spaced epoch. Under
    ``on_divergence: record`` a diverged CNN stops, and the checkpoints it did not reach hold the
    weights it stopped with, marked with its code (relax runs from them record code 4)."""
    epochs = checkpoint_epochs(config.epochs, checkpoint_points)
    resume = ResumeState.claim(
        resume_dir,
        run_identity(
            arm=CNN,
            architecture=arch,
            config=asdict(config),
            checkpoints=epochs,
            data=data_fingerprint(data),
        ),
        log=log,
    )
    torch.manual_seed(config.seed)
    cnn = checkpoints.build_cnn(arch).to(data.train_x.device)

    def save_checkpoint(epoch, model, optimizer, diverged):
        content = checkpoints.payload(
            CNN, arch, model, epoch=epoch, diverged=diverged, optimizer=optimizer.state_dict()
        )
        resume.stage_checkpoint(epoch, content)  # published only when the run is done

    rows = Trainer(
        cnn,
        data,
        config,
        name=CNN,
        checkpoint_epochs=tuple(epochs),
        save_checkpoint=save_checkpoint,
        resume=resume,
        log=log,
    ).run()
    resume.publish_checkpoints(epochs, checkpoint_dir)
    write_rows(metrics_path, run_columns(), rows)
    resume.clear()
    return rows


# -- stage: embed the CNN checkpoint at t_w ------------------------------------------------------------
def embed_checkpoint(
    data,
    arch: dict,
    *,
    arm: str,
    relax_time: int,
    seed: int,
    checkpoint_path,
    check_images: int,
    embedded_path,
    record_path,
    log=sys.stderr,
) -> dict:
    """Save the eFCN / eLCN of the CNN checkpoint at ``relax_time`` (its ``diverged`` mark carried
    over, and the CNN's own weights beside it for the relax run's cheap epoch-0 train evaluation),
    and record how exactly it computes the CNN's function: the largest |logit difference| on
    ``check_images`` held-out images (validation images, else test images), once with both nets
    in float32 as trained and once both in float64."""
    device = data.train_x.device
    cnn, content = checkpoints.load_cnn(checkpoint_path, arch, device, relax_time=relax_time)
    counts = embed.parameter_counts(cnn)
    # float32 weights, then their float64 copy made layer by layer
    check_fits(3 * 4 * counts[arm], device, f"the {arm} ({counts[arm]:,} parameters) in float64")
    net = embed.to_efcn(cnn) if arm == EFCN else embed.to_elcn(cnn)
    checkpoints.save(
        checkpoints.payload(
            arm,
            arch,
            net,
            relax_time=relax_time,
            diverged=content.get(DIVERGED, 0),
            cnn_model=cnn.state_dict(),
        ),
        embedded_path,
    )
    held_out = data.validation_x if len(data.validation_x) else data.test_x
    images = held_out[:check_images]
    fp32, fp64, scale = _logit_differences(cnn, net, images)
    record = {
        "seed": seed,
        "arm": arm,
        "relax_time": relax_time,
        "images": len(images),
        "max_abs_logit": scale,
        "max_abs_logit_difference_fp32": fp32,
        "max_abs_logit_difference_fp64": fp64,
        "cnn_parameters": counts[CNN],
        "embedded_parameters": counts[arm],
    }
    write_rows(record_path, RECORD_COLUMNS, [record])
    print(
        f"[needle] {arm} of the CNN at epoch {relax_time}: max |logit difference| {fp32:.3g} "
        f"(float32), {fp64:.3g} (float64) on {len(images)} images, max |logit| {scale:.3g}",
        file=log,
    )
    return record


@torch.no_grad()
def _logit_differences(cnn, net, images, chunk: int = 500) -> tuple[float, float, float]:
    """(max |CNN - net| in float32, the same in float64, max |CNN logit| in float64). Converts
    both networks to float64 in place: call it after their float32 weights are saved."""
    set_precision("fp32")  # no TF32: the float32 comparison is of the nets as trained in fp32
    cnn.eval()  # dropout off
    net.eval()

    def largest(a, b, inputs) -> tuple[float, float]:
        # torch.maximum, not max(): a NaN (a diverged checkpoint) must show, not be skipped
        gap = scale = torch.zeros((), dtype=torch.float64, device=inputs.device)
        for start in range(0, len(inputs), chunk):
            reference = a(inputs[start : start + chunk])
            difference = reference - b(inputs[start : start + chunk])
            gap = torch.maximum(gap, difference.abs().max().double())
            scale = torch.maximum(scale, reference.abs().max().double())
        return gap.item(), scale.item()

    fp32, _ = largest(cnn, net, images)
    fp64, scale = largest(cnn.double(), net.double(), images.double())
    return fp32, fp64, scale


# -- stage: relax from t_w ----------------------------------------------------------------------------------
def relax(
    data,
    arch: dict,
    config: TrainConfig,
    *,
    arm: str,
    relax_time: int,
    start_path,
    metrics_path,
    final_weights_path=None,
    resume_dir,
    log=sys.stderr,
) -> list[dict]:
    """Train one relax arm from the CNN at ``relax_time`` with a fresh optimiser: the eFCN / eLCN
    the embed stage saved (``start_path`` = embedded.pt), or, for the control cnn_continued, the
    CNN checkpoint itself. Its epoch-0 row is the start; a start marked diverged (or evaluating
    to a non-finite loss) gives that one row with code 4."""
    device = data.train_x.device
    if arm == CNN_CONTINUED:
        net, content = checkpoints.load_cnn(start_path, arch, device, relax_time=relax_time)
        reference = probe = None
    else:
        _check_dense_fits(checkpoints.build_cnn(arch), arm, config, device)
        net, content = checkpoints.load_embedded(start_path, arch, arm, relax_time, device)
        reference = checkpoints.build_cnn(arch)
        checkpoints.load_state_dict(reference, content["cnn_model"], start_path)
        reference = reference.to(device)
        probe = DenseProbe(net, reference, data, config.eval_batch_size, config.precision)
    resume = ResumeState.claim(
        resume_dir,
        run_identity(
            arm=arm,
            relax_time=relax_time,
            architecture=arch,
            config=asdict(config),
            start=file_digest(start_path),
            data=data_fingerprint(data),
        ),
        log=log,
    )
    rows = Trainer(
        net,
        data,
        config,
        name=f"{arm} relaxed at epoch {relax_time}",
        relax_time=relax_time,
        start_diverged=bool(content.get(DIVERGED)),
        reference_model=reference,
        probe=probe,
        resume=resume,
        log=log,
    ).run()
    _finish_run(rows, net, arm, arch, metrics_path, final_weights_path, resume, relax_time)
    return rows


# -- stage: the standard FCN -----------------------------------------------------------------------------
def train_fcn(
    data,
    arch: dict,
    config: TrainConfig,
    *,
    fan_in: str,
    metrics_path,
    final_weights_path=None,
    resume_dir,
    log=sys.stderr,
) -> list[dict]:
    """Train the standard FCN (the eFCN's layer shapes, PyTorch's default init with the ``fan_in``
    of the real or of the zero-padded input) under the shared rule."""
    device = data.train_x.device
    torch.manual_seed(config.seed)
    template = checkpoints.build_cnn(arch)
    _check_dense_fits(template, FCN, config, device)
    net = embed.standard_fcn(template, fan_in=fan_in).to(device)
    probe = DenseProbe(net, template.to(device), data, config.eval_batch_size, config.precision)
    resume = ResumeState.claim(
        resume_dir,
        run_identity(
            arm=FCN,
            fan_in=fan_in,
            architecture=arch,
            config=asdict(config),
            data=data_fingerprint(data),
            dense_layout=embed.DENSE_LAYOUT,
        ),
        log=log,
    )
    rows = Trainer(
        net, data, config, name="standard fcn", probe=probe, resume=resume, log=log
    ).run()
    _finish_run(rows, net, FCN, arch, metrics_path, final_weights_path, resume)
    return rows


# -- stage: the landscape between solutions ----------------------------------------------------------------
def map_landscape(
    data,
    arch: dict,
    *,
    experiment: str,
    seed: int,
    relax_times: list[int],
    cnn_checkpoints: list,
    efcn_finals: list,
    fcn_final,
    points: int,
    examples: int,
    eval_batch_size: int,
    output_path,
    log=sys.stderr,
) -> list[dict]:
    """Loss and accuracy on ``examples`` train and test images along each path of
    names.LANDSCAPE_PATH_KINDS: the eFCN at embedding -> its final weights, each final eFCN ->
    the final standard FCN, consecutive relax times' final eFCNs -> each other. A path is marked
    diverged when either end is (read from the final weights and the CNN checkpoints)."""
    device = data.train_x.device
    splits = {
        "train": (data.train_x[:examples], data.train_y[:examples]),
        "test": (data.test_x[:examples], data.test_y[:examples]),
    }

    def final(path) -> tuple[dict, bool]:
        content = checkpoints.load(path, what="final weights")
        checkpoints.check_architecture(content, arch, path)
        checkpoints.check_dense_layout(content, path)
        return content["model"], bool(content.get(DIVERGED))

    fcn = final(fcn_final)
    finals = {relax_time: final(path) for relax_time, path in zip(relax_times, efcn_finals)}
    paths = []  # (path kind, start arm, start relax time, end arm, end relax time, start, end)
    for relax_time, cnn_path in zip(relax_times, cnn_checkpoints):
        cnn, content = checkpoints.load_cnn(cnn_path, arch, "cpu", relax_time=relax_time)
        embedding = (embed.to_efcn(cnn).state_dict(), bool(content.get(DIVERGED)))
        paths.append(
            (
                "embedding_to_final",
                EFCN,
                relax_time,
                EFCN,
                relax_time,
                embedding,
                finals[relax_time],
            )
        )
        paths.append(("final_to_fcn", EFCN, relax_time, FCN, None, finals[relax_time], fcn))
    for earlier, later in zip(relax_times, relax_times[1:]):
        paths.append(("final_to_final", EFCN, earlier, EFCN, later, finals[earlier], finals[later]))
    net = embed.to_efcn(checkpoints.build_cnn(arch)).to(device)  # loaded with every point
    rows = []
    for kind, start_arm, start_time, end_arm, end_time, start, end in paths:
        path = {
            "experiment": experiment,
            "seed": seed,
            "path_kind": kind,
            "start_arm": start_arm,
            "start_relax_time": start_time,
            "end_arm": end_arm,
            "end_relax_time": end_time,
            DIVERGED: int(start[1] or end[1]),
        }
        path_ends = ((start_arm, start_time), (end_arm, end_time))
        for point in landscape.evaluate_path(
            net, start[0], end[0], splits, points, eval_batch_size
        ):
            rows.append({**path, **point})
        ends = (f"{arm}@{time}" if time is not None else arm for arm, time in path_ends)
        print(f"[needle] landscape path done: {kind} ({' -> '.join(ends)})", file=log)
    write_rows(output_path, LANDSCAPE_COLUMNS, rows)
    return rows


# -- shared ----------------------------------------------------------------------------------------------
def _check_dense_fits(cnn, arm: str, config: TrainConfig, device) -> None:
    parameters = embed.parameter_counts(cnn)[arm]
    check_fits(
        training_bytes(4 * parameters, momentum=config.momentum > 0),
        device,
        f"training the {arm} ({parameters:,} parameters)",
    )


def _conv_layers(net: torch.nn.Module) -> tuple[str, ...]:
    """Names of the conv-derived layers of a dense arm, in order (its per-layer columns)."""
    dense = (embed.Dense2d, embed.LocallyConnected2d)
    return tuple(name for name, layer in net.named_children() if isinstance(layer, dense))


def _finish_run(rows, net, arm, arch, metrics_path, final_weights_path, resume, relax_time=None):
    """A training run's declared outputs (final weights, metrics), then its resume state cleared."""
    if final_weights_path:
        extra = {} if relax_time is None else {"relax_time": relax_time}
        content = checkpoints.payload(
            arm, arch, net, epoch=rows[-1]["epoch"], diverged=rows[-1][DIVERGED], **extra
        )
        checkpoints.save(content, final_weights_path)
    write_rows(metrics_path, run_columns(_conv_layers(net)), rows)
    resume.clear()
