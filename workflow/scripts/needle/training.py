"""Plain-SGD training with per-epoch metrics, log-spaced checkpoints, resume and divergence checks.

One loop serves the CNN, the relaxed eFCN/eLCN and the standard FCN, so that the three arms of the
protocol differ only in the network they train. The whole (sub)set lives as tensors on the device:
an epoch gathers each batch through one permutation, and the only host syncs are once per epoch.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from needle import checkpoints
from needle.device import autocast, set_precision
from needle.embed import Dense2d
from needle.errors import NeedleError
from needle.schedule import checkpoint_epochs  # noqa: F401  (re-exported: part of the API)


class TrainingDiverged(NeedleError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule; the defaults are the authors' code defaults."""

    epochs: int
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 250
    eval_batch_size: int = 1000
    shuffle: bool = True  # the authors' loader did not shuffle; False reproduces that order
    seed: int = 0
    precision: str = "fp32"
    on_divergence: str = "fail"  # "fail" stops with an error; "record" marks the run and stops

    def __post_init__(self):
        for key in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < (0 if key == "epochs" else 1):
                raise NeedleError(
                    f"{key} must be a {'non-negative' if key == 'epochs' else 'positive'} integer, got {value!r}"
                )
        for key in ("lr", "momentum", "weight_decay"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise NeedleError(f"{key} must be a non-negative number, got {value!r}")
        if self.on_divergence not in ("fail", "record"):
            raise NeedleError(
                f"on_divergence must be 'fail' or 'record', got {self.on_divergence!r}"
            )


@contextlib.contextmanager
def sgd_steps_in_backward(model: torch.nn.Module, config: TrainConfig):
    """Within this block, every Dense2d of ``model`` applies its plain-SGD step inside its own
    backward (`needle.embed._DenseStepInBackward`): the weight update is the weight-gradient
    product itself, with no gradient tensor and no separate optimiser pass over the dense weights
    (they are nearly all of an eFCN's parameters). Only for what that step can be: plain SGD
    (momentum and weight decay 0) in fp32/tf32 (bf16 autocast keeps the optimiser). Outside the
    block (evaluation, metrics, any other backward) the layers are ordinary again."""
    fusable = config.momentum == 0 and config.weight_decay == 0 and config.precision != "bf16"
    layers = (
        [module for module in model.modules() if isinstance(module, Dense2d)] if fusable else []
    )
    for layer in layers:
        layer.sgd_step_in_backward = config.lr
    try:
        yield
    finally:
        for layer in layers:
            layer.sgd_step_in_backward = None


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module, inputs, labels, batch_size: int, precision: str = "fp32"
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a whole split, with one host sync at the end."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=inputs.device)
    correct = torch.zeros((), dtype=torch.int64, device=inputs.device)
    for start in range(0, len(inputs), batch_size):
        batch_inputs, batch_labels = (
            inputs[start : start + batch_size],
            labels[start : start + batch_size],
        )
        with autocast(inputs.device, precision):
            logits = model(batch_inputs)
        loss_sum += F.cross_entropy(logits.float(), batch_labels, reduction="sum")
        correct += (logits.argmax(1) == batch_labels).sum()
    model.train(was_training)
    count = max(len(inputs), 1)
    return loss_sum.item() / count, correct.item() / count


class Trainer:
    """Trains ``model`` on ``data`` (an object with train_x/train_y/test_x/test_y tensors).

    ``extra_metrics(model) -> dict`` adds columns to every row (deviation, projection probe...).
    ``on_checkpoint(epoch, model, optimizer)`` is called at each epoch in ``checkpoint_at``.
    ``state_path`` holds the resumable state (weights, optimiser, RNG, rows), rewritten atomically
    after every epoch; a rerun continues from it and ends bit-identical to an uninterrupted run.
    ``epoch_offset`` shifts the ``epoch`` column (a relax run counts total epochs since CNN init).
    ``reference_model``, when given, computes the same function as ``model`` (the CNN an eFCN was
    embedded from) and serves the epoch-0 train-set evaluation at a fraction of the dense net's cost;
    the epoch-0 test evaluation always uses ``model`` itself, which shows the embedding is exact.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        data,
        config: TrainConfig,
        *,
        run_name: str,
        extra_metrics: Callable[[torch.nn.Module], dict] | None = None,
        on_checkpoint: Callable[[int, torch.nn.Module, torch.optim.Optimizer], None] | None = None,
        checkpoint_at: tuple[int, ...] = (),
        state_path: str | Path | None = None,
        epoch_offset: int = 0,
        reference_model: torch.nn.Module | None = None,
        log=sys.stderr,
    ):
        self.model, self.data, self.config = model, data, config
        self.run_name = run_name
        self.extra_metrics = extra_metrics or (lambda model: {})
        self.on_checkpoint = on_checkpoint or (lambda epoch, model, optimizer: None)
        self.checkpoint_at = set(checkpoint_at)
        self.state_path = Path(state_path) if state_path else None
        self.epoch_offset = epoch_offset
        self.log = log
        self.device = data.train_x.device
        set_precision(config.precision)
        self.optimizer = torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        # Shuffling has its own generator so that dropout (global RNG) and order are independent.
        self.order_generator = torch.Generator().manual_seed(config.seed)
        # What a resume state must match: settings, and the network's layer names and shapes.
        shapes = [(name, tuple(tensor.shape)) for name, tensor in model.state_dict().items()]
        self.fingerprint = repr((run_name, asdict(config), epoch_offset, shapes, len(data.train_x)))
        self.reference_model = reference_model

    # -- resumable state -------------------------------------------------------------------------
    def _save_state(self, epoch: int, rows: list[dict]) -> None:
        if self.state_path is None:
            return
        checkpoints.save(
            {
                "format": checkpoints.FORMAT,
                "fingerprint": self.fingerprint,
                "epoch": epoch,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "order_rng": self.order_generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "rows": rows,
            },
            self.state_path,
        )

    def _resume(self) -> tuple[int, list[dict]] | None:
        if self.state_path is None or not self.state_path.exists():
            return None
        try:
            state = checkpoints.load(self.state_path, what="resume state")
        except NeedleError as error:
            # A state file is a cache: when it is unusable, say so and start afresh.
            print(f"[needle] ignoring resume state: {error}", file=self.log)
            return None
        if state.get("fingerprint") != self.fingerprint:
            print(
                f"[needle] ignoring resume state {self.state_path}: made with other settings",
                file=self.log,
            )
            return None
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            print(
                f"[needle] ignoring resume state {self.state_path}: it does not fit this network ({error})"[
                    :300
                ],
                file=self.log,
            )
            return None
        self.order_generator.set_state(state["order_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        print(
            f"[needle] resuming {self.run_name} after epoch {state['epoch']} from {self.state_path}",
            file=self.log,
        )
        return state["epoch"], list(state["rows"])

    def clear_state(self) -> None:
        if self.state_path is not None:
            self.state_path.unlink(missing_ok=True)

    # -- one epoch ---------------------------------------------------------------------------------
    def _train_epoch(self) -> tuple[float, float]:
        """One pass of SGD; returns the running mean loss and accuracy over the epoch's batches."""
        data, config, model = self.data, self.config, self.model
        count = len(data.train_x)
        # Gather each batch from the permutation as it is needed (same batches as permuting the
        # whole set first, without a second copy of the training set every epoch).
        order = (
            torch.randperm(count, generator=self.order_generator).to(self.device)
            if config.shuffle
            else None
        )
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
                # Accumulate on the device: no host sync inside the hot loop.
                loss_sum += loss.detach() * len(batch_labels)
                correct += (logits.detach().argmax(1) == batch_labels).sum()
        return loss_sum.item() / count, correct.item() / count

    def _row(self, epoch: int, train_loss: float, train_accuracy: float) -> dict:
        test_loss, test_accuracy = evaluate(
            self.model,
            self.data.test_x,
            self.data.test_y,
            self.config.eval_batch_size,
            self.config.precision,
        )
        diverged = not (math.isfinite(train_loss) and math.isfinite(test_loss))
        row = {
            "epoch": epoch + self.epoch_offset,
            "epochs_since_relax": epoch,
            "train_loss": train_loss,
            "train_accuracy": train_accuracy,
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
            "diverged": int(diverged),
        }
        if not diverged:
            row.update(self.extra_metrics(self.model))
        return row

    # -- the whole run ----------------------------------------------------------------------------
    def run(self) -> list[dict]:
        """Train to ``config.epochs``; returns one metrics row per epoch (epoch 0 = before training)."""
        resumed = self._resume()
        if resumed is None:
            # Epoch 0: the network as given (at init, or right after embedding), on the full train set.
            train_loss, train_accuracy = evaluate(
                self.reference_model or self.model,
                self.data.train_x,
                self.data.train_y,
                self.config.eval_batch_size,
                self.config.precision,
            )
            rows = [self._row(0, train_loss, train_accuracy)]
            if 0 in self.checkpoint_at:
                self.on_checkpoint(0, self.model, self.optimizer)
            self._save_state(0, rows)
            start = 1
        else:
            last_epoch, rows = resumed
            start = last_epoch + 1
        progress = tqdm(
            range(start, self.config.epochs + 1),
            initial=start - 1,
            total=self.config.epochs,
            desc=self.run_name,
            file=self.log,
            mininterval=5,
        )
        started = time.perf_counter()
        for epoch in progress:
            if rows[-1]["diverged"]:
                break
            train_loss, train_accuracy = self._train_epoch()
            row = self._row(epoch, train_loss, train_accuracy)
            rows.append(row)
            progress.set_postfix(loss=f"{train_loss:.3f}", test_acc=f"{row['test_accuracy']:.3f}")
            if row["diverged"]:
                message = (
                    f"{self.run_name} diverged at epoch {epoch + self.epoch_offset} (loss {train_loss}); lower lr or raise batch_size, "
                    "or set on_divergence: record to keep the run as a marked failure"
                )
                if self.config.on_divergence == "fail":
                    self.clear_state()
                    raise TrainingDiverged(message)
                print(f"[needle] {message}", file=self.log)
            elif epoch in self.checkpoint_at:
                self.on_checkpoint(epoch, self.model, self.optimizer)
            self._save_state(epoch, rows)
        progress.close()
        last = rows[-1]
        print(
            f"[needle] {self.run_name}: {len(rows) - 1} epochs in {time.perf_counter() - started:.1f} s, "
            f"final test accuracy {last['test_accuracy']:.4f}, train loss {last['train_loss']:.4f}"
            + (" (DIVERGED)" if last["diverged"] else ""),
            file=self.log,
        )
        return rows
