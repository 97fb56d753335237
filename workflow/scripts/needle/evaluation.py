"""Loss and accuracy of a network over a whole split: the one evaluation every part of needle uses
(the training loop's rows, the deviation probe's projected CNN, the landscape's paths)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from needle.device import autocast


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    precision: str = "fp32",
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy in [0, 1]) of `model` in eval mode over `inputs`, in batches
    of `batch_size`, with one host sync at the end; the model's train/eval mode is restored.
    An empty split (no validation images, say) has no loss or accuracy: (nan, nan)."""
    if len(inputs) == 0:
        return math.nan, math.nan
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=inputs.device)
    correct = torch.zeros((), dtype=torch.int64, device=inputs.device)
    try:
        for start in range(0, len(inputs), batch_size):
            batch_inputs = inputs[start : start + batch_size]
            batch_labels = labels[start : start + batch_size]
            with autocast(inputs.device, precision):
                logits = model(batch_inputs)
            loss_sum += F.cross_entropy(logits.float(), batch_labels, reduction="sum")
            correct += (logits.argmax(1) == batch_labels).sum()
    finally:
        model.train(was_training)
    return loss_sum.item() / len(inputs), correct.item() / len(inputs)
