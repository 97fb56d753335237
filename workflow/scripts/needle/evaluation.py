"""STAND-IN until the core branch lands: `evaluate` as the contract states it (moved out of
training.py). The core branch owns this module; this copy only lets the train branch run."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from needle.device import autocast


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
        batch_inputs = inputs[start : start + batch_size]
        batch_labels = labels[start : start + batch_size]
        with autocast(inputs.device, precision):
            logits = model(batch_inputs)
        loss_sum += F.cross_entropy(logits.float(), batch_labels, reduction="sum")
        correct += (logits.argmax(1) == batch_labels).sum()
    model.train(was_training)
    count = max(len(inputs), 1)
    return loss_sum.item() / count, correct.item() / count
