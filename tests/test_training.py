"""Specification of needle.training: the training rule (batch order, settings), one row per epoch,
divergence by outcome (codes 1-4, record or fail), checkpoints of a run that stops early, and the
dense fast path (the SGD step inside Dense2d's backward is plain SGD, only inside training).

The loop runs in-process on tiny tensors (a linear model on 2x2 images, 3 classes), so every case
takes well under a second; the stage scripts are exercised in test_stages.py.
"""

import io
import math
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from needle.embed import standard_fcn, to_efcn
from needle.errors import NeedleError
from needle.models import skinny_cnn
from needle.names import DIVERGED, RUN_COLUMNS
from needle.training import (
    DivergenceRule,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    batch_order,
    sgd_steps_in_backward,
)

CLASSES = 3


def tiny_data(count=60, *, scale=1.0, zero_inputs=False, validation=0):
    """``count`` training images of 1x2x2 with balanced labels, pixel <label> lit up (learnable in
    an epoch); the first 30 double as the test set."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(count + validation) % CLASSES
    images = torch.randn(count + validation, 1, 2, 2, generator=generator)
    images.view(len(labels), -1)[torch.arange(len(labels)), labels] += 3.0
    images *= scale
    if zero_inputs:
        images.zero_()
    return SimpleNamespace(
        train_x=images[:count],
        train_y=labels[:count],
        validation_x=images[count:],
        validation_y=labels[count:],
        test_x=images[:30],
        test_y=labels[:30],
        num_classes=CLASSES,
    )


def linear(zero=True):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, CLASSES))
    if zero:  # the start loss is then ln 3 exactly
        nn.init.zeros_(model[1].weight)
        nn.init.zeros_(model[1].bias)
    return model


def train(data, model=None, *, log=None, **settings):
    divergence = DivergenceRule(
        **{key: settings.pop(key) for key in ("on_divergence", "chance_epochs") if key in settings}
    )
    trainer_keys = ("relax_time", "start_diverged", "checkpoint_epochs", "save_checkpoint")
    extra = {key: settings.pop(key) for key in trainer_keys if key in settings}
    config = TrainConfig(**{"epochs": 3, "batch_size": 10, **settings}, divergence=divergence)
    trainer = Trainer(
        model or linear(), data, config, name="run", log=log or io.StringIO(), **extra
    )
    return trainer.run()


# -- the training rule -------------------------------------------------------------------------------------
def test_the_batch_order_of_an_epoch_is_a_permutation_fixed_by_seed_and_epoch_alone():
    order = batch_order(seed=3, epoch=7, count=50)
    assert sorted(order.tolist()) == list(range(50))
    assert torch.equal(order, batch_order(seed=3, epoch=7, count=50))
    assert not torch.equal(order, batch_order(seed=3, epoch=8, count=50))
    assert not torch.equal(order, batch_order(seed=4, epoch=7, count=50))


@pytest.mark.parametrize(
    "settings, words",
    [
        (dict(lr=0.0), "lr must be a finite number > 0, got 0.0"),
        (dict(lr=math.nan), "lr must be a finite number > 0"),
        (dict(momentum=1.0), "momentum must be a number in [0, 1), got 1.0"),
        (dict(epochs=8.0), "epochs must be an integer >= 1, got 8.0"),
        (dict(batch_size=True), "batch_size must be an integer >= 1, got True"),
        (dict(precision="fp16"), "precision must be fp32 or tf32 or bf16"),
        (dict(weight_decay=-1e-4), "weight_decay must be a finite number >= 0"),
    ],
)
def test_bad_training_settings_are_refused_naming_the_setting(settings, words):
    with pytest.raises(NeedleError, match="^" + re.escape(words)):
        TrainConfig(**{"epochs": 3, **settings})


@pytest.mark.parametrize(
    "settings, words",
    [
        (dict(on_divergence="ignore"), "divergence.on_divergence must be record or fail"),
        (dict(loss_factor=1.0), "divergence.loss_factor must be a finite number > 1"),
        (dict(chance_epochs=0), "divergence.chance_epochs must be an integer >= 1"),
    ],
)
def test_bad_divergence_settings_are_refused_naming_the_key(settings, words):
    with pytest.raises(NeedleError, match=words):
        DivergenceRule(**settings)


# -- rows ----------------------------------------------------------------------------------------------------
def test_a_run_has_the_start_row_then_one_row_per_epoch_with_the_contract_columns():
    rows = train(tiny_data(), epochs=4)
    assert [row["epoch"] for row in rows] == [0, 1, 2, 3, 4]
    assert [row["epochs_since_relax"] for row in rows] == [0, 1, 2, 3, 4]
    assert all(tuple(row) == RUN_COLUMNS for row in rows)
    assert rows[0]["train_loss"] == pytest.approx(math.log(3), abs=1e-6), "a full evaluation"
    assert all(row["validation_loss"] is None for row in rows), "no validation split: empty"
    assert all(row[DIVERGED] == 0 for row in rows)


def test_without_test_every_epoch_the_test_set_is_read_only_at_the_start_and_the_readout():
    rows = train(tiny_data(validation=12), epochs=5, test_every_epoch=False, readout_epochs=2)
    tested = [row["epoch"] for row in rows if row["test_accuracy"] is not None]
    assert tested == [0, 4, 5], "the start and the last readout_epochs epochs, nothing else"
    assert all(row["test_loss"] is None for row in rows if row["epoch"] not in tested)
    assert all(row["validation_accuracy"] is not None for row in rows), "validation every epoch"
    every = train(tiny_data(validation=12), epochs=5, readout_epochs=2)
    assert [row["test_accuracy"] for row in every if row["epoch"] in tested] == [
        row["test_accuracy"] for row in rows if row["epoch"] in tested
    ], "evaluating less changes no evaluated number"


def test_validation_metrics_are_logged_every_epoch_when_there_is_a_validation_split():
    rows = train(tiny_data(validation=12), epochs=2)
    assert all(0 <= row["validation_accuracy"] <= 1 for row in rows)
    assert rows[0]["validation_loss"] == pytest.approx(math.log(3), abs=1e-6)


def test_a_relax_run_counts_total_epochs_from_its_relax_time():
    rows = train(tiny_data(), epochs=2, relax_time=5)
    assert [(row["epoch"], row["epochs_since_relax"]) for row in rows] == [(5, 0), (6, 1), (7, 2)]


def test_a_run_at_total_epoch_e_takes_the_batches_of_total_epoch_e():
    """A relax run from t_w = 1 with the CNN's weights and no momentum repeats the CNN's epoch 2
    exactly: same batches, same steps (the control arm rests on this)."""
    data = tiny_data()
    model = linear(zero=False)
    start = {key: value.clone() for key, value in model.state_dict().items()}
    cnn_rows = train(data, model, epochs=2, lr=0.05)
    continued = linear()
    continued.load_state_dict(start)
    train(data, continued, epochs=1, lr=0.05)  # epoch 1 again, from the same start
    control_rows = train(data, continued, epochs=1, lr=0.05, relax_time=1)
    assert control_rows[1]["epoch"] == 2 and control_rows[1]["epochs_since_relax"] == 1
    assert {**control_rows[1], "epochs_since_relax": 2} == cnn_rows[2]


# -- divergence ------------------------------------------------------------------------------------------------
def test_a_non_finite_loss_is_code_1_and_stops_the_run_under_record():
    log = io.StringIO()
    rows = train(tiny_data(scale=1e10), epochs=5, lr=1e30, log=log)
    assert [row[DIVERGED] for row in rows] == [0, 1], "training stops at the diverged epoch"
    assert "diverged at epoch 1: non-finite loss" in log.getvalue()
    assert "training stops" in log.getvalue()


def test_a_loss_above_loss_factor_times_the_start_is_code_2():
    rows = train(tiny_data(scale=10.0), epochs=5, lr=100.0)
    assert math.isfinite(rows[-1]["train_loss"]) and rows[-1]["train_loss"] > 4 * math.log(3)
    assert [row[DIVERGED] for row in rows] == [0, 2]


def test_train_accuracy_at_chance_over_the_last_chance_epochs_flags_the_last_row_with_code_3():
    blind = tiny_data(zero_inputs=True)  # nothing to learn: accuracy stays near 1 / 3 < 1.5 / 3
    rows = train(blind, linear(zero=False), epochs=4, chance_epochs=3)
    assert [row[DIVERGED] for row in rows] == [0, 0, 0, 0, 3], (
        "trained to the end, last row flagged"
    )
    shorter = train(blind, linear(zero=False), epochs=2, chance_epochs=3)
    assert [row[DIVERGED] for row in shorter] == [0, 0, 0], "a run shorter than chance_epochs"


def test_a_relax_run_from_a_diverged_checkpoint_is_one_row_with_code_4():
    rows = train(tiny_data(), epochs=3, relax_time=2, start_diverged=True)
    assert [(row["epoch"], row[DIVERGED]) for row in rows] == [(2, 4)]


def test_a_non_finite_start_is_code_4_for_a_relax_run_and_code_1_otherwise():
    broken = linear()
    with torch.no_grad():
        broken[1].bias.fill_(math.nan)
    assert [row[DIVERGED] for row in train(tiny_data(), broken, relax_time=1)] == [4]
    assert [row[DIVERGED] for row in train(tiny_data(), broken)] == [1]


def test_under_fail_a_divergence_raises_with_its_reason_and_the_setting_to_change():
    with pytest.raises(TrainingDiverged) as raised:
        train(tiny_data(scale=10.0), epochs=5, lr=100.0, on_divergence="fail")
    message = str(raised.value)
    assert "run diverged at epoch 1: train loss above its limit" in message
    assert "lower optimiser.lr" in message and "on_divergence: record" in message


def test_checkpoints_the_run_did_not_reach_hold_its_stopping_weights_and_code():
    saved = {}

    def save_checkpoint(epoch, model, optimizer, diverged):
        saved[epoch] = (model[1].weight.detach().clone(), diverged)

    model = linear()
    rows = train(
        tiny_data(scale=10.0),
        model,
        epochs=8,
        lr=100.0,
        checkpoint_epochs=(0, 1, 4, 8),
        save_checkpoint=save_checkpoint,
    )
    assert rows[-1]["epoch"] == 1 and rows[-1][DIVERGED] == 2
    assert {epoch: code for epoch, (_, code) in saved.items()} == {0: 0, 1: 2, 4: 2, 8: 2}
    assert torch.equal(saved[8][0], model[1].weight) and torch.equal(saved[4][0], saved[1][0])
    assert not torch.equal(saved[0][0], saved[1][0])


# -- the dense fast path --------------------------------------------------------------------------------------
def small_efcn(seed=0):
    torch.manual_seed(seed)
    return to_efcn(skinny_cnn(1, 28, 10, 4)).double()


def batches(count=4, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(8, 1, 28, 28, generator=generator, dtype=torch.float64),
            torch.randint(0, 10, (8,), generator=generator),
        )
        for _ in range(count)
    ]


def sgd(net, config, fused: bool):
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum)
    net.train()
    for inputs, labels in batches():
        with sgd_steps_in_backward(net, config) if fused else torch.enable_grad():
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(net(inputs), labels).backward()
            optimizer.step()
    return net


def test_sgd_step_in_backward_is_plain_sgd():
    config = TrainConfig(epochs=1, lr=0.05)
    fused, plain = sgd(small_efcn(), config, True), sgd(small_efcn(), config, False)
    for (name, a), b in zip(fused.named_parameters(), plain.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-13), name
    assert not torch.equal(fused.conv1.weight, small_efcn().conv1.weight), "the weights moved"


def test_dense_layers_step_in_backward_only_inside_the_block():
    net, config = small_efcn(), TrainConfig(epochs=1, lr=0.05)
    inputs, labels = batches(1)[0]
    before = net.conv2.weight.detach().clone()
    with sgd_steps_in_backward(net, config):
        assert net.conv2.sgd_step_in_backward == 0.05
        with torch.no_grad():
            net(inputs)  # evaluation inside the block builds no graph and steps nothing
        net.eval()
        F.cross_entropy(net(inputs), labels).backward()  # eval mode: ordinary layers
        assert net.conv2.weight.grad is not None and torch.equal(net.conv2.weight, before)
        net.train()
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(inputs), labels).backward()
        assert net.conv2.weight.grad is None and not torch.equal(net.conv2.weight, before)
    assert net.conv2.sgd_step_in_backward is None
    moved = net.conv2.weight.detach().clone()
    F.cross_entropy(net(inputs), labels).backward()  # after the block: ordinary again
    assert torch.equal(net.conv2.weight, moved) and net.conv2.weight.grad is not None


@pytest.mark.parametrize(
    "settings", [dict(momentum=0.9), dict(weight_decay=1e-4), dict(precision="bf16")]
)
def test_other_optimisers_and_bf16_keep_the_ordinary_gradient_path(settings):
    net = standard_fcn(skinny_cnn(1, 28, 10, 4))
    with sgd_steps_in_backward(net, TrainConfig(epochs=1, **settings)):
        assert net.conv1.sgd_step_in_backward is None


def test_dense_feature_maps_are_channels_last_views():
    net = small_efcn().eval()
    inputs = batches(1)[0][0]
    out = net.conv1(inputs)
    assert out.shape == (8, 4, 15, 15) and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(
        net.conv2(net.pool1(out)).flatten(1), net.conv2(net.pool1(out).contiguous()).flatten(1)
    )
