"""Specification of needle.evaluation: mean loss and accuracy over a whole split."""

import math

import pytest
import torch
import torch.nn as nn

from needle.evaluation import evaluate


def logits_model():
    """Returns its inputs as logits, through a dropout that would scramble them in train mode."""
    return nn.Sequential(nn.Dropout(0.5), nn.Flatten())


def test_mean_cross_entropy_and_accuracy_over_uneven_batches():
    # logits (ln 3, 0): p(class 0) = 3/4, so a loss of -ln(3/4) for label 0 and -ln(1/4) for label 1
    inputs = torch.tensor([[math.log(3), 0.0]] * 4)
    labels = torch.tensor([0, 1, 0, 0])
    model = logits_model().train()
    loss, accuracy = evaluate(model, inputs, labels, batch_size=3)
    assert loss == pytest.approx((3 * 0.2876820724517809 + 1.3862943611198906) / 4, abs=1e-6)
    assert accuracy == 0.75
    assert model.training  # the caller's mode is restored


def test_accuracy_is_a_fraction_of_the_whole_split():
    inputs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    loss, accuracy = evaluate(logits_model(), inputs, torch.tensor([0, 1, 0, 2]), batch_size=1)
    assert accuracy == 0.5 and math.isfinite(loss)


def test_an_empty_split_has_no_loss_or_accuracy():
    model = nn.Linear(3, 2)
    loss, accuracy = evaluate(model, torch.empty(0, 3), torch.empty(0, dtype=torch.int64), 10)
    assert math.isnan(loss) and math.isnan(accuracy)
