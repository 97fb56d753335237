"""Loss and accuracy along straight lines between two solutions in FCN weight space.

The paper's claim 6: the eFCN's good solutions sit in basins that a standard FCN does not reach.
A barrier (loss rising above both ends) on the line between two solutions says they lie in
different basins; a flat line says they are linearly connected.
"""

from __future__ import annotations

import torch

from needle.evaluation import evaluate  # STAND-IN until the core branch lands


def interpolate(
    start: dict[str, torch.Tensor], end: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """(1 - alpha) * start + alpha * end, key by key (both from networks of the same shapes)."""
    if start.keys() != end.keys():
        raise ValueError("cannot interpolate between networks with different layers")
    return {key: torch.lerp(start[key].float(), end[key].float(), alpha) for key in start}


def alphas(points: int) -> list[float]:
    """``points`` evenly spaced values from 0 to 1 inclusive."""
    return [index / (points - 1) for index in range(points)] if points > 1 else [0.0]


@torch.no_grad()
def evaluate_path(
    net: torch.nn.Module, start: dict, end: dict, splits: dict, points: int, eval_batch_size: int
) -> list[dict]:
    """Rows (alpha, split, loss, accuracy) along the line from ``start`` (alpha 0) to ``end`` (alpha 1).

    ``splits`` maps a split name to (inputs, labels). ``net`` is loaded with each point in turn.
    """
    device = next(net.parameters()).device
    start = {key: value.to(device) for key, value in start.items()}
    end = {key: value.to(device) for key, value in end.items()}
    rows = []
    for alpha in alphas(points):
        net.load_state_dict(interpolate(start, end, alpha))
        for split, (inputs, labels) in splits.items():
            loss, accuracy = evaluate(net, inputs, labels, eval_batch_size)
            rows.append({"alpha": alpha, "split": split, "loss": loss, "accuracy": accuracy})
    return rows
