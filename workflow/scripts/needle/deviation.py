"""Distance of an eFCN (or eLCN) from the CNN subspace, and the projection back onto it.

For a conv-derived layer with weight W, the CNN subspace is the set of weights a CNN can produce:
zero outside the locality blocks, and inside them equal entries within each tied class (same output
channel o, input channel c and kernel offset (ki, kj), over all output positions where that offset
lands on a real input pixel; padding is folded, so at border positions some tied entries do not
exist). The orthogonal projection P(W) zeroes the off-block entries and replaces each tied entry by
its class mean. Then

    deviation             = ||W - P(W)|| / ||W||
    deviation_nonlocal    = ||W outside the blocks|| / ||W||
    deviation_nonsharing  = ||W inside the blocks - P(W)|| / ||W||

and deviation^2 = nonlocal^2 + nonsharing^2 (the two parts live on disjoint entries). Only the
weight matrix enters the deviation; the bias is projected too (mean over positions) by
`project_to_cnn`. For a LocallyConnected2d everything is local (nonlocal = 0), and the norms run
over the weights that see real pixels: weights that only ever multiply padding cannot affect the
function and have no counterpart in the (folded) eFCN.

The same measure applied to the displacement D = W - W_start since a run's start gives

    displacement_offsubspace = ||D - P(D)|| / ||D||   (0 when D = 0)

the share of the movement that leaves the subspace. The deviation grows with the distance
travelled whatever the direction (small isotropic noise on an eFCN already gives a large one);
this share says which way the net moved: about 1 for isotropic noise, 0 for a move that a CNN
could have made.

Everything is vectorised through `needle.embed.tied_views` (one strided view per kernel offset),
and large dense weights are processed in chunks of output channels so that the temporary copy
needed for the off-block norm (and for D) stays small. `DenseProbe` gathers all of it, with the
distance travelled and the accuracy of the projected CNN, into the columns a dense run logs.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
from collections.abc import Iterable, Mapping

import torch
import torch.nn as nn

from needle.embed import Dense2d, LocallyConnected2d, dense_channel_grid, tied_views
from needle.errors import NeedleError
from needle.evaluation import evaluate
from needle.models import trace_shapes
from needle.names import LAYER_METRICS, POOLED_LAYER, PROBE_METRICS

# Dense weights are processed in blocks of whole output channels of about this many elements, so
# the temporary copy stays small (64-128 MB) while Python-level steps and kernel launches stay few.
_CHUNK_ELEMENTS = {"cpu": 1 << 24, "cuda": 1 << 25}


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device):
    """Run the probe's many small strided ops on one CPU thread. They are memory-bound and tiny, so
    a second thread gains little, and on a loaded machine every parallel region waits for a
    descheduled worker: with several threads on shared cores the probe ran many times slower."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _single_threaded(function):
    @functools.wraps(function)
    def wrapper(net, *args, **kwargs):
        parameter = next(net.parameters(), None)
        with _one_cpu_thread(parameter.device if parameter is not None else torch.device("cpu")):
            return function(net, *args, **kwargs)

    return wrapper


def _tied_mean(view: torch.Tensor) -> torch.Tensor:
    """Mean over positions (dims 1, 2) of a (C', n_i, n_j, C) tied view, computed as
    reference + mean(view - reference) so that equal entries give back exactly their value."""
    reference = view[:, :1, :1, :]
    return (reference + (view - reference).mean(dim=(1, 2), keepdim=True))[:, 0, 0, :]


def _squared_norm(tensor: torch.Tensor) -> torch.Tensor:
    # Native-dtype norm (float32 accumulation is cascaded, accurate to ~1e-7 here), squared and
    # summed in float64 on the device: one host sync per layer, not one per block.
    return torch.linalg.vector_norm(tensor).double().square()


def _channel_chunks(layer: nn.Module, weight: torch.Tensor):
    """(first channel, last channel + 1, weight block) over blocks of whole output channels of a
    contiguous Dense2d weight, each a (H', W', C'', H*W*C) view (`embed.dense_channel_grid`);
    one block, the weight itself, for LocallyConnected2d. Tied classes never straddle two blocks,
    so every block can be handled on its own."""
    if isinstance(layer, LocallyConnected2d):
        yield 0, layer.out_shape[0], weight
        return
    grid = dense_channel_grid(layer, weight)
    channels, height, width = layer.out_shape
    budget = _CHUNK_ELEMENTS.get(weight.device.type, _CHUNK_ELEMENTS["cuda"])
    step = max(1, budget // (height * width * weight.shape[1]))
    for start in range(0, channels, step):
        stop = min(start + step, channels)
        yield start, stop, grid[:, :, start:stop]


@torch.no_grad()
def _squared_parts(
    layer: nn.Module, weight: torch.Tensor, start: torch.Tensor | None = None
) -> tuple[float, float, float]:
    """(||T||^2, ||T off-block||^2, ||T in-block - P(T)||^2) for T = weight - start (T = weight
    when start is None), both shaped like the weight of `layer`, a Dense2d / LocallyConnected2d.
    For LocallyConnected2d, ||T||^2 counts only weights that see real pixels and off-block is 0.
    A dense T is formed one block of output channels at a time, never whole."""
    weight = weight.detach().contiguous()
    dense = isinstance(layer, Dense2d)
    if start is not None and not dense:
        weight, start = weight - start.detach(), None  # a locally connected weight is small
    start_chunks = (
        _channel_chunks(layer, start.detach().contiguous()) if start is not None else None
    )
    total, nonlocal_, nonsharing = (
        torch.zeros((), dtype=torch.float64, device=weight.device) for _ in range(3)
    )
    buffer = None
    for first, stop, chunk in _channel_chunks(layer, weight):
        if dense:
            # Off-block norm computed exactly (no cancellation from ||T||^2 - ||in-block||^2):
            # copy the block into a reused buffer, zero its in-block entries, take the norm.
            buffer = (
                torch.empty_like(chunk, memory_format=torch.contiguous_format)
                if buffer is None
                else buffer
            )
            chunk = buffer[:, :, : stop - first].copy_(chunk)
            if start_chunks is not None:
                chunk.sub_(next(start_chunks)[2])
            total += _squared_norm(chunk)
        for _, _, view in tied_views(layer, chunk):
            tied = view.clone()  # one gather of the strided entries
            nonsharing += _squared_norm(tied - _tied_mean(tied)[:, None, None, :])
            if dense:
                view.zero_()
            else:
                total += _squared_norm(tied)
        if dense:
            nonlocal_ += _squared_norm(chunk)
    return total.item(), nonlocal_.item(), nonsharing.item()


def _ratios(total: float, nonlocal_: float, nonsharing: float) -> dict[str, float]:
    if total == 0.0:  # the zero matrix lies on the subspace
        return {"deviation": 0.0, "deviation_nonlocal": 0.0, "deviation_nonsharing": 0.0}
    norm = math.sqrt(total)
    return {
        "deviation": math.sqrt(nonlocal_ + nonsharing) / norm,
        "deviation_nonlocal": math.sqrt(nonlocal_) / norm,
        "deviation_nonsharing": math.sqrt(nonsharing) / norm,
    }


def _conv_derived_layers(net: nn.Module, caller: str) -> list[tuple[str, nn.Module]]:
    layers = [
        (name, layer)
        for name, layer in net.named_children()
        if isinstance(layer, (Dense2d, LocallyConnected2d))
    ]
    if not layers:
        raise NeedleError(
            f"{caller}: the network has no Dense2d or LocallyConnected2d layer; "
            "pass an eFCN/eLCN (or standard FCN) built by needle.embed"
        )
    return layers


def _pooled_ratios(parts_by_layer: Iterable[tuple[str, tuple[float, float, float]]]) -> dict:
    """{layer: ratios} plus POOLED_LAYER: the squared norms summed over layers, then the ratios."""
    result, pooled = {}, [0.0, 0.0, 0.0]
    for name, parts in parts_by_layer:
        result[name] = _ratios(*parts)
        pooled = [a + b for a, b in zip(pooled, parts)]
    result[POOLED_LAYER] = _ratios(*pooled)
    return result


@_single_threaded
def layer_deviations(net: nn.Module) -> dict[str, dict[str, float]]:
    """Relative distance of each Dense2d / LocallyConnected2d child of `net` from the CNN
    subspace: {layer name: {"deviation", "deviation_nonlocal", "deviation_nonsharing"}}, plus
    "all" with the norms pooled over those layers (sqrt of summed squares over sqrt of summed
    ||W||^2). Exactly 0 right after embedding; about 1 for a standard FCN."""
    return _pooled_ratios(
        (name, _squared_parts(layer, layer.weight))
        for name, layer in _conv_derived_layers(net, "layer_deviations")
    )


@_single_threaded
def displacement_offsubspace(net: nn.Module, start: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Share of each conv-derived layer's movement since `start` that leaves the CNN subspace:
    {layer name: ||D - P(D)|| / ||D||} with D = the layer's weight - start["<layer>.weight"]
    (`start` as from net.named_parameters() or net.state_dict() at the run's start), 0 when D = 0,
    plus "all" pooled over the layers as in `layer_deviations`."""
    parts = []
    for name, layer in _conv_derived_layers(net, "displacement_offsubspace"):
        initial = start.get(f"{name}.weight")
        if initial is None or initial.shape != layer.weight.shape:
            raise NeedleError(
                f"displacement_offsubspace: the start weights have no {name}.weight of shape "
                f"{tuple(layer.weight.shape)}; pass the same network's parameters at its start"
            )
        parts.append((name, _squared_parts(layer, layer.weight, initial)))
    return {name: ratios["deviation"] for name, ratios in _pooled_ratios(parts).items()}


@_single_threaded
@torch.no_grad()
def project_to_cnn(net: nn.Module, cnn_template: nn.Sequential) -> nn.Sequential:
    """The CNN whose eFCN (eLCN) is P(net): a copy of `cnn_template` (same layout) whose conv
    kernels are the tied-class means of net's conv-derived layers (off-block entries dropped) and
    whose biases are the per-channel means over positions; every other layer is copied from `net`
    as it is. Kernel offsets that never touch a real pixel (possible only with large padding) do
    not exist in the eFCN and keep the template's values. Returns a new module in net's dtype and
    device; `net` is not modified."""
    reference = next(net.parameters())
    cnn = copy.deepcopy(cnn_template).to(device=reference.device, dtype=reference.dtype)
    input_shape = getattr(net, "input_shape", None) or getattr(cnn_template, "input_shape", None)
    in_shapes = (
        dict(zip((name for name, _ in cnn.named_children()), trace_shapes(cnn, input_shape)))
        if input_shape
        else {}
    )
    template_children = dict(cnn.named_children())
    for name, layer in net.named_children():
        target = template_children.get(name)
        if target is None:
            raise NeedleError(
                f"project_to_cnn: the template has no layer {name!r}; pass the CNN the "
                "network was embedded from (same architecture and sizes)"
            )
        if isinstance(layer, (Dense2d, LocallyConnected2d)):
            geometry = (
                layer.in_shape[0],
                layer.out_shape[0],
                layer.kernel_size,
                layer.stride,
                layer.padding,
            )
            if (
                not isinstance(target, nn.Conv2d)
                or geometry
                != (
                    target.in_channels,
                    target.out_channels,
                    tuple(target.kernel_size),
                    tuple(target.stride),
                    tuple(target.padding),
                )
                or (name in in_shapes and in_shapes[name] != layer.in_shape)
            ):
                raise NeedleError(
                    f"project_to_cnn: layer {name!r} of the template does not match the "
                    "network's geometry; pass the CNN it was embedded from"
                )
            for start, stop, chunk in _channel_chunks(layer, layer.weight.detach().contiguous()):
                for ki, kj, view in tied_views(layer, chunk):
                    target.weight[start:stop, :, ki, kj] = _tied_mean(view)
            if layer.bias is not None and target.bias is not None:
                channels = layer.out_shape[0]
                per_position = (
                    layer.bias.detach().view(-1, channels).t()
                    if isinstance(layer, Dense2d)
                    else layer.bias.detach().reshape(channels, -1)
                ).reshape(channels, 1, -1, 1)
                target.bias.copy_(_tied_mean(per_position)[:, 0])
        else:
            target.load_state_dict(layer.state_dict())
    cnn.train(net.training)
    return cnn


def _norm(tensors: Iterable[torch.Tensor]) -> float:
    """sqrt of the summed squared norms: per-tensor norms in the tensors' dtype (no float64 copies
    of big weights), summed in float64."""
    return math.sqrt(
        sum(torch.linalg.vector_norm(tensor).double().item() ** 2 for tensor in tensors)
    )


class DenseProbe:
    """What a dense run (fcn, efcn, elcn) logs at each epoch besides loss and accuracy.

    Made at the run's start (its weights then are the start of "distance_from_start" and of the
    displacement); `probe(net)` returns, in this order, names.PROBE_METRICS (distance_from_start
    = ||theta - theta_start|| / ||theta_start|| over all parameters; test loss and accuracy of
    P(net) read back as a CNN of `cnn_template`'s layout) and "<metric>/<layer>" for each metric
    of names.LAYER_METRICS and each conv-derived layer, then the pooled layer "all"."""

    def __init__(
        self,
        net: nn.Module,
        cnn_template: nn.Sequential,
        data,
        eval_batch_size: int,
        precision: str,
    ):
        self.cnn_template, self.data = cnn_template, data
        self.eval_batch_size, self.precision = eval_batch_size, precision
        self.start = {name: p.detach().clone() for name, p in net.named_parameters()}
        self.start_norm = _norm(self.start.values())

    @torch.no_grad()
    def __call__(self, net: nn.Module, test: bool = True) -> dict[str, float | None]:
        """The row's probe columns; with ``test`` off (not a test epoch of the run) the projected
        CNN's test loss and accuracy are None (not evaluated)."""
        travelled = _norm(p - self.start[name] for name, p in net.named_parameters())
        distance = travelled / self.start_norm if self.start_norm > 0 else math.nan
        loss = accuracy = None
        if test:
            projected = project_to_cnn(net, self.cnn_template)
            loss, accuracy = evaluate(
                projected, self.data.test_x, self.data.test_y, self.eval_batch_size, self.precision
            )
        row = dict(zip(PROBE_METRICS, (distance, loss, accuracy), strict=True))
        per_layer = layer_deviations(net)
        for layer, share in displacement_offsubspace(net, self.start).items():
            per_layer[layer]["displacement_offsubspace"] = share
        for metric in LAYER_METRICS:
            for layer, values in per_layer.items():
                row[f"{metric}/{layer}"] = values[metric]
        return row
