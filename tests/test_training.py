"""Specification of needle.training's dense fast path: the SGD step applied inside Dense2d's
backward is plain SGD, and only inside the training block."""

import pytest
import torch
import torch.nn.functional as F

from needle.embed import standard_fcn, to_efcn
from needle.models import skinny_cnn
from needle.training import TrainConfig, sgd_steps_in_backward


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


def train(net, config, fused: bool):
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
    fused, plain = train(small_efcn(), config, True), train(small_efcn(), config, False)
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
