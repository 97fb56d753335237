"""Specification of needle.deviation: distance from the CNN subspace and projection onto it."""

import itertools
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from needle import deviation
from needle.deviation import DenseProbe, displacement_offsubspace, layer_deviations, project_to_cnn
from needle.embed import Dense2d, LocallyConnected2d, standard_fcn, to_efcn, to_elcn
from needle.errors import NeedleError
from needle.models import skinny_cnn

KEYS = {"deviation", "deviation_nonlocal", "deviation_nonsharing"}


def tied_class_ids(layer):
    """Brute force, one entry at a time: for every weight of a Dense2d (as a dense matrix) or a
    LocallyConnected2d, the id of the CNN weight (o, c, ki, kj) it is tied to, or -1 where the
    CNN has a structural zero (off-block, or a locally connected weight that only sees padding)."""
    (c_in, h, w), (c_out, oh, ow) = layer.in_shape, layer.out_shape
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
    ids = torch.full(layer.weight.shape, -1, dtype=torch.long)
    for o, i, j, c, ki, kj in itertools.product(
        range(c_out), range(oh), range(ow), range(c_in), range(kh), range(kw)
    ):
        y, x = i * sh + ki - ph, j * sw + kj - pw
        if 0 <= y < h and 0 <= x < w:
            class_id = ((o * c_in + c) * kh + ki) * kw + kj
            if isinstance(layer, Dense2d):
                ids[(i * ow + j) * c_out + o, (y * w + x) * c_in + c] = (
                    class_id  # channels-last rows/cols
                )
            else:
                ids[i * ow + j, o, (c * kh + ki) * kw + kj] = class_id
    return ids


def reference_projection(weight, ids):
    """P(W): each tied entry replaced by its class mean, everything else zero."""
    live = ids >= 0
    n = int(ids.max()) + 1
    sums = torch.zeros(n, dtype=weight.dtype).index_add_(0, ids[live], weight[live])
    counts = torch.zeros(n, dtype=weight.dtype).index_add_(
        0, ids[live], torch.ones_like(weight[live])
    )
    projected = torch.zeros_like(weight)
    projected[live] = (sums / counts)[ids[live]]
    return projected


def make_small_cnn(k, s, p, seed=0):
    torch.manual_seed(seed)
    cnn = nn.Sequential()
    cnn.add_module("conv1", nn.Conv2d(2, 3, k, s, p))
    cnn.add_module("relu1", nn.ReLU())
    cnn.add_module("conv2", nn.Conv2d(3, 2, (3, 2), (1, 2), (1, 0)))
    cnn.input_shape = (2, 9, 8)
    return cnn.double()


def perturb(net, scale=0.1, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in net.parameters():
            param.add_(scale * torch.randn(param.shape, generator=gen, dtype=param.dtype))
    return net


GEOMETRIES = [(4, 2, 2), (5, 1, 2), (3, 1, 1), (1, 1, 0), (3, 3, 3), (7, 2, 3), (2, 3, 1)]


@pytest.mark.parametrize("embed", [to_efcn, to_elcn], ids=["efcn", "elcn"])
@pytest.mark.parametrize(
    "setting", [(3, 32, 64, 0), (1, 28, 8, 3)], ids=["cifar_w64", "fmnist_w8_sgd"]
)
def test_deviation_is_exactly_zero_right_after_embedding(embed, setting):
    channels, size, width, sgd_steps = setting
    torch.manual_seed(0)
    cnn = skinny_cnn(channels, size, 10, width)
    opt = torch.optim.SGD(cnn.parameters(), lr=0.1)
    for _ in range(sgd_steps):
        opt.zero_grad()
        nn.functional.cross_entropy(
            cnn(torch.randn(8, channels, size, size)), torch.arange(8)
        ).backward()
        opt.step()
    deviations = layer_deviations(embed(cnn))
    assert set(deviations) == {"conv1", "conv2", "conv3", "all"}
    for values in deviations.values():
        assert values == {key: 0.0 for key in KEYS}


@pytest.mark.parametrize("embed", [to_efcn, to_elcn], ids=["efcn", "elcn"])
def test_projecting_the_embedding_gives_back_the_cnn_weights(embed):
    torch.manual_seed(0)
    cnn = skinny_cnn(3, 32, 10, 16)
    template = skinny_cnn(3, 32, 10, 16)  # different weights: only the layout is used
    projected = project_to_cnn(embed(cnn), template)
    assert projected is not template
    for (name, value), (_, original) in zip(
        projected.state_dict().items(), cnn.state_dict().items()
    ):
        assert torch.equal(value, original), name


@pytest.mark.parametrize("k, s, p", GEOMETRIES)
def test_projected_cnn_of_a_perturbed_efcn_embeds_to_the_orthogonal_projection(k, s, p):
    cnn = make_small_cnn(k, s, p)
    efcn = perturb(to_efcn(cnn))
    before = {key: value.clone() for key, value in efcn.state_dict().items()}
    reprojected = to_efcn(project_to_cnn(efcn, make_small_cnn(k, s, p, seed=5)))
    deviations = layer_deviations(efcn)
    for name in ("conv1", "conv2"):
        layer = efcn.get_submodule(name)
        ids = tied_class_ids(layer)
        weight = layer.weight.detach()
        expected = reference_projection(weight, ids)
        assert (reprojected.get_submodule(name).weight - expected).abs().max() <= 1e-12
        bias = layer.bias.detach().view(-1, layer.out_shape[0])  # (positions, channels)
        assert torch.allclose(
            reprojected.get_submodule(name).bias.view_as(bias),
            bias.mean(0, keepdim=True).expand_as(bias),
            atol=1e-12,
            rtol=0,
        )
        # deviations against brute-force norms; the two parts are orthogonal
        norm = weight.norm().item()
        got = deviations[name]
        assert got["deviation"] == pytest.approx((weight - expected).norm().item() / norm, rel=1e-9)
        assert got["deviation_nonlocal"] == pytest.approx(
            weight[ids < 0].norm().item() / norm, rel=1e-9
        )
        assert got["deviation_nonsharing"] == pytest.approx(
            (weight[ids >= 0] - expected[ids >= 0]).norm().item() / norm, rel=1e-9
        )
        assert got["deviation_nonlocal"] ** 2 + got["deviation_nonsharing"] ** 2 == pytest.approx(
            got["deviation"] ** 2, rel=1e-12
        )
    # project_to_cnn does not modify its input
    assert all(torch.equal(value, before[key]) for key, value in efcn.state_dict().items())


@pytest.mark.parametrize("k, s, p", GEOMETRIES)
def test_locally_connected_deviation_is_pure_nonsharing_over_live_weights(k, s, p):
    cnn = make_small_cnn(k, s, p)
    elcn = perturb(to_elcn(cnn))
    deviations = layer_deviations(elcn)
    reprojected = to_elcn(project_to_cnn(elcn, cnn))
    for name in ("conv1", "conv2"):
        layer = elcn.get_submodule(name)
        ids = tied_class_ids(layer)
        weight = layer.weight.detach()
        expected = reference_projection(weight, ids)
        live = ids >= 0
        assert (reprojected.get_submodule(name).weight[live] - expected[live]).abs().max() <= 1e-12
        got = deviations[name]
        assert got["deviation_nonlocal"] == 0.0
        assert got["deviation_nonsharing"] == pytest.approx(
            (weight[live] - expected[live]).norm().item() / weight[live].norm().item(), rel=1e-9
        )
        assert got["deviation"] == pytest.approx(got["deviation_nonsharing"], rel=1e-12)


def test_projection_is_idempotent():
    cnn = make_small_cnn(4, 2, 2)
    efcn = perturb(to_efcn(cnn), scale=0.3)
    once = project_to_cnn(efcn, cnn)
    twice = project_to_cnn(to_efcn(once), cnn)
    for (name, a), (_, b) in zip(once.state_dict().items(), twice.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-14, rtol=0), name
    assert layer_deviations(to_efcn(once))["all"]["deviation"] <= 1e-14


def test_all_pools_norms_over_layers():
    cnn = make_small_cnn(3, 1, 1)
    efcn = perturb(to_efcn(cnn), scale=0.2)
    deviations = layer_deviations(efcn)
    squared_norms = {
        name: efcn.get_submodule(name).weight.norm().item() ** 2 for name in ("conv1", "conv2")
    }
    for key in KEYS:
        pooled = sum(deviations[name][key] ** 2 * squared_norms[name] for name in squared_norms)
        assert deviations["all"][key] == pytest.approx(
            math.sqrt(pooled / sum(squared_norms.values())), rel=1e-9
        )


@pytest.mark.parametrize("shape", [(3, 32), (1, 28)], ids=["cifar", "fmnist"])
def test_standard_fcn_is_far_from_the_cnn_subspace(shape):
    torch.manual_seed(0)
    deviations = layer_deviations(standard_fcn(skinny_cnn(*shape, 10, 16)))
    for name, values in deviations.items():
        assert values["deviation"] > 0.9, name


def test_offsets_that_never_see_a_real_pixel_keep_the_template_values():
    # A 5x5 kernel with padding 2 on a 1x1 image: only the centre offset touches the pixel.
    cnn = nn.Sequential()
    cnn.add_module("conv1", nn.Conv2d(2, 3, 5, 1, 2))
    cnn.input_shape = (2, 1, 1)
    template = nn.Sequential()
    template.add_module("conv1", nn.Conv2d(2, 3, 5, 1, 2))
    projected = project_to_cnn(to_efcn(cnn), template)
    assert torch.equal(projected.conv1.weight[:, :, 2, 2], cnn.conv1.weight[:, :, 2, 2])
    dead = torch.ones(5, 5, dtype=torch.bool)
    dead[2, 2] = False
    assert torch.equal(projected.conv1.weight[:, :, dead], template.conv1.weight[:, :, dead])
    x = torch.randn(4, 2, 1, 1)
    assert torch.allclose(projected(x), cnn(x), atol=1e-6)


def test_project_to_cnn_rejects_a_template_of_another_architecture():
    efcn = to_efcn(skinny_cnn(1, 28, 10, 8))
    with pytest.raises(NeedleError, match="template"):
        project_to_cnn(efcn, skinny_cnn(1, 28, 10, 16))
    with pytest.raises(NeedleError, match="no Dense2d"):
        layer_deviations(skinny_cnn(1, 28, 10, 8))


def test_projection_follows_the_networks_dtype():
    efcn = to_efcn(skinny_cnn(1, 28, 10, 8).double())
    assert project_to_cnn(efcn, skinny_cnn(1, 28, 10, 8)).conv1.weight.dtype == torch.float64
    assert isinstance(to_elcn(skinny_cnn(1, 28, 10, 8)).conv1, LocallyConnected2d)


# ---------------------------------------------------------------- chunking


def test_many_chunks_give_the_one_chunk_results_on_trained_weights(monkeypatch):
    """Dense weights are processed in blocks of output channels; a budget of one element forces
    one channel per block. Deviation, displacement and projection must not depend on it."""
    cnn = skinny_cnn(1, 28, 10, 8).double()
    efcn = to_efcn(cnn)
    start = {name: p.detach().clone() for name, p in efcn.named_parameters()}
    perturb(efcn, scale=0.01)  # off the subspace, every entry non-zero
    one_chunk = (
        layer_deviations(efcn),
        displacement_offsubspace(efcn, start),
        project_to_cnn(efcn, cnn).state_dict(),
    )
    monkeypatch.setattr(deviation, "_CHUNK_ELEMENTS", {"cpu": 1, "cuda": 1})
    chunks = list(deviation._channel_chunks(efcn.conv1, efcn.conv1.weight.detach()))
    assert len(chunks) == 8  # really one channel per block now
    deviations, displacement, projected = (
        layer_deviations(efcn),
        displacement_offsubspace(efcn, start),
        project_to_cnn(efcn, cnn).state_dict(),
    )
    for layer, parts in one_chunk[0].items():
        assert parts["deviation"] > 0.1
        for key, value in parts.items():
            assert deviations[layer][key] == pytest.approx(value, rel=1e-12), (layer, key)
    for layer, share in one_chunk[1].items():
        assert share > 0.1 and displacement[layer] == pytest.approx(share, rel=1e-12), layer
    for key, value in one_chunk[2].items():
        torch.testing.assert_close(projected[key], value, rtol=0, atol=1e-15)


# ---------------------------------------------------------------- displacement off the subspace


def test_displacement_share_is_zero_at_the_start():
    efcn = to_efcn(skinny_cnn(1, 28, 10, 8))
    start = {name: p.detach().clone() for name, p in efcn.named_parameters()}
    assert displacement_offsubspace(efcn, start) == {
        "conv1": 0.0,
        "conv2": 0.0,
        "conv3": 0.0,
        "all": 0.0,
    }


def test_displacement_share_of_isotropic_noise_is_the_off_subspace_dimension_share():
    """For Gaussian noise D on N dense entries, ||D - P(D)||^2 / ||D||^2 is about (N - d) / N,
    d = the subspace's dimension (one dimension per tied class o, c, ki, kj): nearly 1."""
    torch.manual_seed(0)
    efcn = to_efcn(skinny_cnn(1, 28, 10, 8)).double()
    start = {name: p.detach().clone() for name, p in efcn.named_parameters()}
    perturb(efcn, scale=0.01)
    share = displacement_offsubspace(efcn, start)
    # Fashion-MNIST Skinny width 8: (rows, columns) of the dense weights; d = 8 * C_in * kh * kw
    sizes = {"conv1": (8 * 15 * 15, 784, 8 * 16), "conv2": (8 * 7 * 7, 8 * 7 * 7, 8 * 8 * 25)}
    sizes["conv3"] = (8 * 3 * 3, 8 * 3 * 3, 8 * 8 * 9)
    for layer, (rows, columns, dimension) in sizes.items():
        expected = math.sqrt(1 - dimension / (rows * columns))
        assert share[layer] == pytest.approx(expected, abs=0.01), layer
    assert share["conv1"] > 0.999 and share["all"] > 0.99


@pytest.mark.parametrize("embed", [to_efcn, to_elcn], ids=["efcn", "elcn"])
def test_displacement_share_is_zero_for_a_move_a_cnn_could_make(embed):
    cnn = skinny_cnn(1, 28, 10, 8).double()
    start_net = embed(cnn)
    start = {name: p.detach().clone() for name, p in start_net.named_parameters()}
    moved = embed(perturb(cnn, scale=0.1))  # another CNN, embedded: D lies in the subspace
    share = displacement_offsubspace(moved, start)
    assert share == {"conv1": 0.0, "conv2": 0.0, "conv3": 0.0, "all": 0.0}
    assert layer_deviations(moved)["all"]["deviation"] == 0.0


@pytest.mark.parametrize("k, s, p", GEOMETRIES)
@pytest.mark.parametrize("embed", [to_efcn, to_elcn], ids=["efcn", "elcn"])
def test_displacement_share_equals_the_brute_force_projection_of_the_displacement(embed, k, s, p):
    net = embed(make_small_cnn(k, s, p))
    start = {name: p.detach().clone() for name, p in net.named_parameters()}
    perturb(net, scale=0.05)
    share = displacement_offsubspace(net, start)
    for name in ("conv1", "conv2"):
        layer = net.get_submodule(name)
        ids = tied_class_ids(layer)
        moved = layer.weight.detach() - start[f"{name}.weight"]
        if isinstance(layer, LocallyConnected2d):  # weights that only see padding do not count
            moved = torch.where(ids >= 0, moved, torch.zeros_like(moved))
        off = moved - reference_projection(moved, ids)
        assert share[name] == pytest.approx((off.norm() / moved.norm()).item(), rel=1e-9), name


def test_displacement_needs_the_same_networks_start_weights():
    efcn = to_efcn(skinny_cnn(1, 28, 10, 8))
    with pytest.raises(NeedleError, match=r"no conv2\.weight of shape \(392, 392\)"):
        displacement_offsubspace(efcn, {"conv1.weight": efcn.conv1.weight})


# ---------------------------------------------------------------- the probe of a dense run


def probe_setting(images):
    """A tiny float64 Skinny CNN and a stand-in for needle.data.Data (the probe reads test_x/y)."""
    torch.manual_seed(0)
    cnn = skinny_cnn(1, 28, 10, 4).double()
    data = SimpleNamespace(
        test_x=torch.randn(images, 1, 28, 28, dtype=torch.float64), test_y=torch.arange(images) % 10
    )
    return cnn, data


def test_dense_probe_row_has_the_contract_columns_in_order():
    cnn, data = probe_setting(6)
    row = DenseProbe(to_efcn(cnn), cnn, data, eval_batch_size=4, precision="fp32")(to_efcn(cnn))
    layers = ("conv1", "conv2", "conv3", "all")
    assert list(row) == [
        "distance_from_start",
        "projected_test_loss",
        "projected_test_accuracy",
        *(f"deviation/{layer}" for layer in layers),
        *(f"deviation_nonlocal/{layer}" for layer in layers),
        *(f"deviation_nonsharing/{layer}" for layer in layers),
        *(f"displacement_offsubspace/{layer}" for layer in layers),
    ]


def test_dense_probe_measures_the_move_since_the_runs_start():
    cnn, data = probe_setting(10)
    efcn = to_efcn(cnn)
    probe = DenseProbe(efcn, cnn, data, eval_batch_size=3, precision="fp32")
    at_start = probe(efcn)
    assert at_start["distance_from_start"] == 0.0
    assert all(at_start[key] == 0.0 for key in at_start if "/" in key)
    # P(eFCN) is the CNN itself: its test accuracy is the CNN's (10 images: a multiple of 0.1)
    with torch.no_grad():
        cnn_correct = (cnn.eval()(data.test_x).argmax(1) == data.test_y).sum().item()
    assert at_start["projected_test_accuracy"] == cnn_correct / 10

    start = [p.detach().clone() for p in efcn.parameters()]
    perturb(efcn, scale=0.05)
    moved = probe(efcn)
    travelled = math.sqrt(
        sum((p - q).square().sum().item() for p, q in zip(efcn.parameters(), start))
    )
    size = math.sqrt(sum(q.square().sum().item() for q in start))
    assert moved["distance_from_start"] == pytest.approx(travelled / size, rel=1e-9)
    assert moved["deviation/all"] == pytest.approx(
        layer_deviations(efcn)["all"]["deviation"], rel=1e-12
    )
    assert 0.9 < moved["displacement_offsubspace/all"] < 1.0
