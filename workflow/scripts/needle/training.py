"""The training loop every arm shares: plain SGD under one rule, one metrics row per epoch.

The CNN, the standard FCN, the relaxed eFCN/eLCN and the control differ only in the network they
train and where it starts. Epoch e (total epochs since CNN init) draws its batch order and its
dropout from (seed, e) alone, so every arm sees the same batches at the same total epoch, a relax
run does not replay the CNN's first epochs, and a resumed run needs no saved random state. The
whole (sub)set lives as tensors on the device: an epoch gathers each batch through one permutation
and syncs with the host once, at its end.

`Trainer` is the loop; its collaborators are small: `DivergenceWatch` (when a run has failed, by
outcome), `needle.resume.ResumeState` (the state saved after every epoch) and `_RunLog` (what the
job's log says).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from needle.device import autocast, set_precision
from needle.embed import Dense2d
from needle.errors import NeedleError
from needle.evaluation import evaluate
from needle.names import DIVERGED, DIVERGENCE_REASONS, PRECISIONS
from needle.resume import ResumeState
from needle.schema import experiment_default, experiment_enum

NON_FINITE, LOSS_ABOVE_LIMIT, AT_CHANCE, FROM_DIVERGED = sorted(DIVERGENCE_REASONS)
_HOW_TO_FIX = {
    NON_FINITE: "lower optimiser.lr or raise optimiser.batch_size",
    LOSS_ABOVE_LIMIT: "lower optimiser.lr or raise divergence.loss_factor",
    AT_CHANCE: "lower optimiser.lr, or train longer than divergence.chance_epochs",
    FROM_DIVERGED: "the CNN diverged before this relax time: see its log",
}


class TrainingDiverged(NeedleError):
    """A run diverged under ``on_divergence: fail``."""


def _require(ok: bool, key: str, value, wanted: str) -> None:
    if not ok:
        raise NeedleError(f"{key} must be {wanted}, got {value!r}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


@dataclass(frozen=True)
class DivergenceRule:
    """When a run counts as diverged and what then happens (the config's divergence block)."""

    on_divergence: str = experiment_default("divergence.on_divergence")
    loss_factor: float = experiment_default("divergence.loss_factor")
    chance_epochs: int = experiment_default("divergence.chance_epochs")

    def __post_init__(self):
        choices = experiment_enum("divergence.on_divergence")
        _require(
            self.on_divergence in choices,
            "divergence.on_divergence",
            self.on_divergence,
            " or ".join(choices),
        )
        _require(
            _is_number(self.loss_factor) and self.loss_factor > 1,
            "divergence.loss_factor",
            self.loss_factor,
            "a finite number > 1",
        )
        _require(
            _is_int(self.chance_epochs) and self.chance_epochs >= 1,
            "divergence.chance_epochs",
            self.chance_epochs,
            "an integer >= 1",
        )


@dataclass(frozen=True)
class TrainConfig:
    """The training rule of one run: the experiment's shared optimiser block, its epochs, seed,
    evaluation and numerics, and the divergence rule. Defaults are the schema's."""

    epochs: int
    seed: int = experiment_default("seeds")[0]
    lr: float = experiment_default("optimiser.lr")
    momentum: float = experiment_default("optimiser.momentum")
    weight_decay: float = experiment_default("optimiser.weight_decay")
    batch_size: int = experiment_default("optimiser.batch_size")
    eval_batch_size: int = experiment_default("eval_batch_size")
    shuffle: bool = experiment_default("shuffle")
    precision: str = experiment_default("precision")
    test_every_epoch: bool = experiment_default("comparison.test_every_epoch")
    readout_epochs: int = experiment_default("comparison.readout_epochs")
    divergence: DivergenceRule = field(default_factory=DivergenceRule)

    def tests_at(self, since: int) -> bool:
        """Whether epoch ``since`` of a run evaluates the test set: always at the start and over
        the readout epochs; every epoch unless test_every_epoch is off."""
        return self.test_every_epoch or since == 0 or since > self.epochs - self.readout_epochs

    def __post_init__(self):
        for key in ("epochs", "batch_size", "eval_batch_size", "readout_epochs"):
            value = getattr(self, key)
            _require(_is_int(value) and value >= 1, key, value, "an integer >= 1")
        _require(_is_int(self.seed) and self.seed >= 0, "seed", self.seed, "an integer >= 0")
        _require(_is_number(self.lr) and self.lr > 0, "lr", self.lr, "a finite number > 0")
        _require(
            _is_number(self.momentum) and 0 <= self.momentum < 1,
            "momentum",
            self.momentum,
            "a number in [0, 1)",
        )
        _require(
            _is_number(self.weight_decay) and self.weight_decay >= 0,
            "weight_decay",
            self.weight_decay,
            "a finite number >= 0",
        )
        _require(isinstance(self.shuffle, bool), "shuffle", self.shuffle, "true or false")
        _require(
            isinstance(self.test_every_epoch, bool),
            "test_every_epoch",
            self.test_every_epoch,
            "true or false",
        )
        _require(self.precision in PRECISIONS, "precision", self.precision, " or ".join(PRECISIONS))


# -- randomness: a function of (seed, epoch) ------------------------------------------------------------
def _stream_seed(seed: int, stream: str) -> int:
    """An independent seed per purpose, the same in every run (needle.data's derivation)."""
    digest = hashlib.sha256(f"needle:{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def batch_order(seed: int, epoch: int, count: int) -> torch.Tensor:
    """The permutation of total epoch ``epoch`` (1-based): every arm trained with ``seed`` takes
    the same batches at the same total epoch."""
    generator = torch.Generator().manual_seed(_stream_seed(seed, f"order:{epoch}"))
    return torch.randperm(count, generator=generator)


def seed_dropout(seed: int, epoch: int) -> None:
    """Dropout of total epoch ``epoch`` drawn from (seed, epoch) too (AlexNet has dropout)."""
    torch.manual_seed(_stream_seed(seed, f"dropout:{epoch}"))


@contextlib.contextmanager
def sgd_steps_in_backward(model: torch.nn.Module, config: TrainConfig):
    """Within this block, every Dense2d of ``model`` applies its plain-SGD step inside its own
    backward (`needle.embed._DenseStepInBackward`): the weight update is the weight-gradient
    product itself, with no gradient tensor and no separate optimiser pass over the dense weights
    (they are nearly all of an eFCN's parameters). Only for what that step can be: plain SGD
    (momentum and weight decay 0) in fp32/tf32 (bf16 autocast keeps the optimiser). Outside the
    block (evaluation, metrics, any other backward) the layers are ordinary again."""
    fusable = config.momentum == 0 and config.weight_decay == 0 and config.precision != "bf16"
    layers = [module for module in model.modules() if isinstance(module, Dense2d)]
    for layer in layers if fusable else []:
        layer.sgd_step_in_backward = config.lr
    try:
        yield
    finally:
        for layer in layers:
            layer.sgd_step_in_backward = None


# -- divergence, by outcome ---------------------------------------------------------------------------
def _finite(row: dict) -> bool:
    """Every loss the row evaluated is finite (None: a split not evaluated at this epoch)."""
    losses = (row["train_loss"], row["validation_loss"], row["test_loss"])
    return all(loss is None or math.isfinite(loss) for loss in losses)


class DivergenceWatch:
    """Decides, row by row, whether a run has diverged and with which reason code
    (names.DIVERGENCE_REASONS): 1 a non-finite loss; 2 a train loss above loss_factor x the run's
    epoch-0 train loss; 3 train accuracy below 1.5 / classes over the run's last chance_epochs
    epochs, judged on the last row (a run shorter than that is never judged at chance); 4 a relax
    run whose start is a diverged CNN checkpoint or evaluates to a non-finite loss."""

    def __init__(self, rule: DivergenceRule, num_classes: int, *, relaxed: bool, inherited: bool):
        self.rule, self.chance = rule, 1.5 / num_classes
        self.relaxed, self.inherited = relaxed, inherited

    def at_start(self, row: dict) -> int:
        if self.inherited or (self.relaxed and not _finite(row)):
            return FROM_DIVERGED
        return 0 if _finite(row) else NON_FINITE

    def after_epoch(self, rows: list[dict], *, last: bool) -> int:
        """The code of ``rows[-1]`` (rows[0] is the run's start)."""
        row = rows[-1]
        if not _finite(row):
            return NON_FINITE
        if row["train_loss"] > self.rule.loss_factor * rows[0]["train_loss"]:
            return LOSS_ABOVE_LIMIT
        recent = rows[1:][-self.rule.chance_epochs :]
        if (
            last
            and len(recent) == self.rule.chance_epochs
            and all(r["train_accuracy"] < self.chance for r in recent)
        ):
            return AT_CHANCE
        return 0


def _shown(value) -> str:
    return "not evaluated" if value is None else f"{value:.4f}"


# -- the log -----------------------------------------------------------------------------------------------
class _RunLog:
    """What a run tells its job's log: progress, divergence, and which epochs this process trained
    (a resumed process names only its own, which shows that finished epochs were not redone)."""

    def __init__(self, name: str, epochs: int, stream):
        self.name, self.epochs, self.stream = name, epochs, stream
        self.trained: list[int] = []
        self.started = time.perf_counter()

    def say(self, message: str) -> None:
        print(f"[needle] {message}", file=self.stream, flush=True)

    def progress(self, first: int) -> tqdm:
        """A bar over the epochs (of this run) from ``first`` on."""
        return tqdm(
            range(first, self.epochs + 1),
            initial=first - 1,
            total=self.epochs,
            desc=self.name,
            file=self.stream,
            mininterval=5,
        )

    def diverged(self, row: dict, recorded: bool) -> str:
        code = row[DIVERGED]
        message = (
            f"{self.name} diverged at epoch {row['epoch']}: {DIVERGENCE_REASONS[code]} "
            f"(train loss {row['train_loss']:.4g}, train accuracy {row['train_accuracy']:.3f})"
        )
        if recorded:
            stops = "" if code == AT_CHANCE else ", training stops"  # chance: judged at the end
            self.say(f"{message}; recorded (on_divergence: record){stops}")
        return (
            f"{message}; {_HOW_TO_FIX[code]}, or set divergence.on_divergence: record to keep the "
            "run as a marked failure"
        )

    def close(self, rows: list[dict]) -> None:
        seconds = time.perf_counter() - self.started
        first, last_trained = (self.trained[0], self.trained[-1]) if self.trained else (0, 0)
        if not self.trained:
            done = "this process trained no epochs"
        elif first == last_trained:
            done = f"this process trained epoch {first}"
        else:
            done = f"this process trained epochs {first}-{last_trained}"
        last = rows[-1]
        self.say(
            f"{self.name}: {done} in {seconds:.1f} s; last epoch {last['epoch']}, test accuracy "
            f"{_shown(last['test_accuracy'])}, train loss {last['train_loss']:.4f}"
            + (f"; DIVERGED: {DIVERGENCE_REASONS[last[DIVERGED]]}" if last[DIVERGED] else "")
        )


# -- the loop -------------------------------------------------------------------------------------------
class Trainer:
    """Trains ``model`` on ``data`` (train/validation/test tensors) under ``config``.

    ``relax_time`` (relax runs) shifts the epoch column to total epochs and makes a bad start a
    code-4 divergence; ``start_diverged`` says the start checkpoint is marked diverged.
    ``reference_model`` computes the same function as ``model`` (the CNN an eFCN was embedded
    from) and serves the epoch-0 train-set evaluation at a fraction of the dense net's cost; the
    epoch-0 validation and test evaluations use ``model`` itself. ``probe(model) -> dict`` adds the
    dense arms' columns to every row with finite losses. ``save_checkpoint(epoch, model, optimizer,
    diverged)`` is called at each epoch of ``checkpoint_epochs``; when the run stops early, the
    epochs it did not reach are saved with the weights it stopped with and its code.
    ``resume`` holds the state saved after every epoch.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        data,
        config: TrainConfig,
        *,
        name: str,
        relax_time: int | None = None,
        start_diverged: bool = False,
        reference_model: torch.nn.Module | None = None,
        probe: Callable[[torch.nn.Module], dict] | None = None,
        checkpoint_epochs: tuple[int, ...] = (),
        save_checkpoint: Callable | None = None,
        resume: ResumeState | None = None,
        log=sys.stderr,
    ):
        self.model, self.data, self.config = model, data, config
        self.offset = relax_time or 0
        self.reference_model, self.probe = reference_model, probe
        self.checkpoint_epochs, self.save_checkpoint = checkpoint_epochs, save_checkpoint
        self.resume = resume
        self.watch = DivergenceWatch(
            config.divergence,
            data.num_classes,
            relaxed=relax_time is not None,
            inherited=start_diverged,
        )
        self.log = _RunLog(name, config.epochs, log)
        self.device = data.train_x.device
        set_precision(config.precision)
        self.optimizer = torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )

    def run(self) -> list[dict]:
        """Train to ``config.epochs``; one metrics row per epoch (epoch 0 = the start)."""
        rows = self.resume.restore(self.model, self.optimizer) if self.resume else None
        if rows is None:
            rows = [self._start_row()]
            self._close_epoch(rows)
        progress = self.log.progress(len(rows))
        for since in progress:
            if rows[-1][DIVERGED]:
                break
            train_loss, train_accuracy = self._train_epoch(self.offset + since)
            rows.append(self._row(since, train_loss, train_accuracy))
            rows[-1][DIVERGED] = self.watch.after_epoch(rows, last=since == self.config.epochs)
            self._close_epoch(rows)
            self.log.trained.append(self.offset + since)
        progress.close()
        self.log.close(rows)
        return rows

    def _close_epoch(self, rows: list[dict]) -> None:
        """Act on the newest row: divergence, checkpoints, then the resume state (so a saved state
        implies that its checkpoints exist)."""
        row = rows[-1]
        since = row["epochs_since_relax"]
        code = row[DIVERGED]
        if code:
            recorded = self.config.divergence.on_divergence == "record"
            message = self.log.diverged(row, recorded)
            if not recorded:
                if self.resume:
                    self.resume.clear()  # a failed run leaves nothing behind but its log
                raise TrainingDiverged(message)
        stops = code and code != AT_CHANCE
        for epoch in self.checkpoint_epochs:
            if epoch == since or (stops and epoch > since):
                self.save_checkpoint(epoch, self.model, self.optimizer, code)
        if self.resume:
            self.resume.save(rows, self.model, self.optimizer)

    def _start_row(self) -> dict:
        """Epoch 0: the network as it starts, every split evaluated in full."""
        train_loss, train_accuracy = evaluate(
            self.reference_model or self.model,
            self.data.train_x,
            self.data.train_y,
            self.config.eval_batch_size,
            self.config.precision,
        )
        row = self._row(0, train_loss, train_accuracy)
        row[DIVERGED] = self.watch.at_start(row)
        return row

    def _row(self, since: int, train_loss: float, train_accuracy: float) -> dict:
        def measure(inputs, labels, wanted=True) -> tuple[float | None, float | None]:
            if len(inputs) == 0 or not wanted:  # no validation split, or not a test epoch
                return None, None  # written as an empty cell
            return evaluate(
                self.model, inputs, labels, self.config.eval_batch_size, self.config.precision
            )

        data, tests = self.data, self.config.tests_at(since)
        validation_loss, validation_accuracy = measure(data.validation_x, data.validation_y)
        test_loss, test_accuracy = measure(data.test_x, data.test_y, tests)
        row = {
            "epoch": self.offset + since,
            "epochs_since_relax": since,
            "train_loss": train_loss,
            "train_accuracy": train_accuracy,
            "validation_loss": validation_loss,
            "validation_accuracy": validation_accuracy,
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
            DIVERGED: 0,
        }
        if self.probe is not None and _finite(row):
            row.update(self.probe(self.model, test=tests))
        return row

    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass of SGD at total epoch ``epoch``; the running mean loss and accuracy over its
        batches."""
        data, config, model = self.data, self.config, self.model
        count = len(data.train_x)
        # Each batch is gathered from the permutation as it is needed (the same batches as
        # permuting the whole set first, without a second copy of the training set per epoch).
        order = batch_order(config.seed, epoch, count).to(self.device) if config.shuffle else None
        seed_dropout(config.seed, epoch)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        model.train()
        with sgd_steps_in_backward(model, config):
            for start in range(0, count, config.batch_size):
                if order is None:
                    batch_inputs = data.train_x[start : start + config.batch_size]
                    batch_labels = data.train_y[start : start + config.batch_size]
                else:
                    batch = order[start : start + config.batch_size]
                    batch_inputs, batch_labels = data.train_x[batch], data.train_y[batch]
                with autocast(self.device, config.precision):
                    logits = model(batch_inputs)
                loss = F.cross_entropy(logits.float(), batch_labels)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                # Accumulated on the device: no host sync inside the hot loop.
                loss_sum += loss.detach() * len(batch_labels)
                correct += (logits.detach().argmax(1) == batch_labels).sum()
        return loss_sum.item() / count, correct.item() / count
