"""Exact embeddings of a CNN into a fully-connected net (eFCN) and a locally connected net (eLCN).

A Conv2d with input C x H x W and output C' x H' x W' becomes `Dense2d`, a dense layer whose weight
has shape (H'*W'*C', H*W*C): row (i, j, o) holds kernel w[o] at the input block that output
position (i, j) sees, zeros elsewhere, and bias b[o] is repeated at every position. Rows and
columns are in channels-last order (position-major, channel fastest), so a Dense2d reads and
writes feature maps in `torch.channels_last` memory format with no copy, and the max-pooling in
between runs on PyTorch's channels-last CPU kernel (about 10x faster than on NCHW maps of these
shapes). Pooling, ReLU, dropout and linear layers are copied unchanged, except that a ReLU followed
by a max-pool is reordered to pool first: max and ReLU commute (ReLU is monotone), so the function
and its gradients are the same, and the ReLU touches 4x fewer values.

Zero padding is FOLDED into the dense matrix: there are columns only for real input pixels. The
authors kept explicit padding layers, which adds columns for padded pixels. Those columns always
multiply zeros, so they never change the output and their gradient (input^T * upstream grad) is
always exactly zero: with plain SGD (and momentum) they never move, and every other weight sees the
same forward pass and the same gradient either way. Folding therefore gives the same function and
the same training dynamics on every weight that matters, with fewer parameters (CIFAR-10 Skinny
ch=64: 73,952,522 instead of 110,606,602). (Weight decay would shrink the dead columns, which still
never affect the output.)

Embedding is vectorised: for each kernel offset (ki, kj) (a loop of kh*kw steps, never over
positions or channels) the entries of the dense matrix that hold w[:, :, ki, kj] form a regular
lattice in memory, i.e. one strided view (C', n_i, n_j, C) of the weight; one `copy_` fills it.
Output positions whose input pixel for that offset lies in the padding are simply left out of the
view (that is the folding). `tied_views` exposes the same views for projection and deviation.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from needle.errors import NeedleError
from needle.models import conv_output_size, trace_shapes


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else tuple(int(v) for v in value)


class _ConvGeometry(nn.Module):
    """Geometry shared by Dense2d and LocallyConnected2d: in_shape (C, H, W), out_shape
    (C', H', W'), kernel_size, stride and padding as (h, w) pairs (zero padding, no dilation)."""

    def _set_geometry(self, in_shape, out_channels, kernel_size, stride, padding) -> None:
        in_shape = tuple(int(s) for s in in_shape)
        if len(in_shape) != 3 or min(in_shape) < 1 or out_channels < 1:
            raise NeedleError(
                f"{type(self).__name__}: in_shape must be (C, H, W) of positive ints and "
                f"out_channels positive, got in_shape={in_shape}, out_channels={out_channels}"
            )
        self.in_shape = in_shape
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        out_hw = tuple(
            conv_output_size(s, k, st, p)
            for s, k, st, p in zip(in_shape[1:], self.kernel_size, self.stride, self.padding)
        )
        if (
            min(out_hw) < 1
            or min(self.stride) < 1
            or min(self.kernel_size) < 1
            or min(self.padding) < 0
        ):
            raise NeedleError(
                f"{type(self).__name__}: kernel {self.kernel_size}, stride {self.stride}, "
                f"padding {self.padding} give an empty output on input {in_shape}; "
                "use a smaller kernel or larger input"
            )
        self.out_shape = (int(out_channels), *out_hw)

    def offset_ranges(self) -> Iterator[tuple[int, int, int, int, int, int]]:
        """For each kernel offset (ki, kj): the output rows [i0, i1) and columns [j0, j1) whose
        input pixel for that offset is real (not padding). Empty offsets are skipped."""
        (_, h, w), (_, oh, ow) = self.in_shape, self.out_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding

        def live(k, size, out, s, p):
            # output index i is live when 0 <= i*s + k - p <= size - 1
            return max(0, -((k - p) // s)), min(out, (size - 1 + p - k) // s + 1)

        for ki in range(kh):
            i0, i1 = live(ki, h, oh, sh, ph)
            if i1 <= i0:
                continue
            for kj in range(kw):
                j0, j1 = live(kj, w, ow, sw, pw)
                if j1 > j0:
                    yield ki, kj, i0, i1, j0, j1

    def extra_repr(self) -> str:
        return (
            f"in_shape={self.in_shape}, out_shape={self.out_shape}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}"
        )


# Bump when the meaning of a Dense2d weight's entries changes: saved eFCN/FCN weights and resume
# states record it, so a file written with another layout is refused instead of silently misread.
DENSE_LAYOUT = "dense2d-channels-last-v2"


class _DenseStepInBackward(torch.autograd.Function):
    """out = x W^T + b, whose backward also applies the plain-SGD step W -= lr * g^T x,
    b -= lr * sum(g) to the layer (and reports no gradient for W and b).

    Written out, the weight gradient g^T x is a product as large as the forward one and the SGD
    step is then three more passes over W (write the gradient, read it, update W): for the
    Fashion-MNIST Skinny ch=32 eFCN, 8% of a CPU step. Here the step is the product itself, one
    `addmm_` into W (beta=1, alpha=-lr). The input gradient is computed first, from the weights
    of the forward pass, so the result is plain SGD (up to rounding: the product is summed into W
    instead of rounded to a gradient first)."""

    @staticmethod
    def forward(ctx, x, weight, bias, lr):
        ctx.save_for_backward(x, weight, bias)
        ctx.lr = lr
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias = ctx.saved_tensors
        grad_x = grad_out @ weight if ctx.needs_input_grad[0] else None
        with torch.no_grad():
            weight.addmm_(grad_out.t(), x, alpha=-ctx.lr)
            if bias is not None:
                bias.sub_(grad_out.sum(0), alpha=ctx.lr)
        return grad_x, None, None, None


class Dense2d(_ConvGeometry):
    """Fully-connected layer between feature maps: (N, C, H, W) -> (N, C', H', W') through a dense
    `weight` of shape (H'*W'*C', H*W*C) and `bias` of shape (H'*W'*C',), rows and columns in
    channels-last order (see the module docstring). Inputs may have any memory format (a
    channels_last input is read with no copy); the output is a channels_last view of the product.
    The conv geometry (kernel_size, stride, padding) says where the CNN subspace lies; the layer
    itself is dense.

    `initialize=True` gives nn.Linear's default init (fan_in = C*H*W); `initialize=False` gives
    zeros (what the embedding fills in, and enough for loading a state_dict).

    `sgd_step_in_backward = lr` (set by `needle.training` around its training steps only) makes
    a training-mode forward with autograd on apply its own plain-SGD step during backward."""

    def __init__(
        self,
        in_shape,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        bias=True,
        *,
        initialize=True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self._set_geometry(in_shape, out_channels, kernel_size, stride, padding)
        rows, cols = math.prod(self.out_shape), math.prod(self.in_shape)
        self.weight = nn.Parameter(torch.zeros(rows, cols, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(rows, device=device, dtype=dtype)) if bias else None
        self.sgd_step_in_backward: float | None = None
        if initialize:
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Exactly nn.Linear.reset_parameters (kaiming_uniform a=sqrt(5), bias U(+-1/sqrt(fan_in)))."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight.shape[1])
            nn.init.uniform_(self.bias, -bound, bound)

    def weight_grid(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The weight as a (H', W', C', H, W, C) view: entry [i, j, o, y, x, c] connects input
        pixel (c, y, x) to output (o, i, j)."""
        weight = self.weight if weight is None else weight
        return weight.view(
            *self.out_shape[1:], self.out_shape[0], *self.in_shape[1:], self.in_shape[0]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        flat = x.permute(0, 2, 3, 1).reshape(n, -1)  # (N, H*W*C): a view for channels_last input
        if self.sgd_step_in_backward is not None and self.training and torch.is_grad_enabled():
            out = _DenseStepInBackward.apply(
                flat, self.weight, self.bias, self.sgd_step_in_backward
            )
        else:
            out = F.linear(flat, self.weight, self.bias)  # one addmm
        channels, height, width = self.out_shape
        return out.view(n, height, width, channels).permute(0, 3, 1, 2)


class LocallyConnected2d(_ConvGeometry):
    """Convolution without weight sharing: every output position (i, j) has its own kernel.
    `weight` has shape (H'*W', C', C*kh*kw) (position, out channel, unfolded input patch in
    F.unfold's (c, ki, kj) order) and `bias` shape (C', H', W'). Padding is zero padding; weights
    that only ever see padded pixels exist but never affect the output."""

    def __init__(
        self,
        in_shape,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        bias=True,
        *,
        initialize=True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self._set_geometry(in_shape, out_channels, kernel_size, stride, padding)
        c, (oc, oh, ow) = self.in_shape[0], self.out_shape
        patch = c * self.kernel_size[0] * self.kernel_size[1]
        self.weight = nn.Parameter(torch.zeros(oh * ow, oc, patch, device=device, dtype=dtype))
        self.bias = (
            nn.Parameter(torch.zeros(oc, oh, ow, device=device, dtype=dtype)) if bias else None
        )
        if initialize:
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Conv2d's default init per position (fan_in = C*kh*kw)."""
        bound = 1 / math.sqrt(self.weight.shape[2])
        nn.init.uniform_(
            self.weight, -bound, bound
        )  # == kaiming_uniform(a=sqrt(5)) with this fan_in
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LocallyConnected.apply(
            x, self.weight, self.bias, self.kernel_size, self.stride, self.padding, self.out_shape
        )


class _LocallyConnected(torch.autograd.Function):
    """out[n, o, l] = bias[o, l] + sum_k weight[l, o, k] * patch[l, k, n], as one batched matmul
    over positions l, with every operand laid out so that each per-position matrix has a unit
    stride. Plain autograd through F.unfold + permute + bmm hands CPU bmm a gradient whose
    per-position matrices have no unit stride, so it copied each of the L matrices separately, and
    im2col/col2im plus the transposing copies of the (K x L x N) patch tensor cost more than the
    products (the eLCN ran slower than the much larger eFCN). Here the input is put batch-last
    once, (C, H, W, N) (small), so the patches (L, K, N) are gathered in contiguous runs of N, the
    upstream gradient is transposed once (small), and the input gradient is scattered back with one
    strided add per kernel offset; it is only formed when needed (never for the first layer)."""

    @staticmethod
    def forward(ctx, x, weight, bias, kernel_size, stride, padding, out_shape):
        n, c = x.shape[:2]
        (oc, oh, ow), (kh, kw), (sh, sw), (ph, pw) = out_shape, kernel_size, stride, padding
        batch_last = F.pad(x, (pw, pw, ph, ph)).permute(1, 2, 3, 0)  # (C, Hp, Wp, N) view
        windows = batch_last.unfold(1, kh, sh)[:, :oh].unfold(2, kw, sw)[
            :, :, :ow
        ]  # (C, H', W', N, kh, kw)
        cols = windows.permute(1, 2, 0, 4, 5, 3).reshape(
            oh * ow, c * kh * kw, n
        )  # (L, K, N) one copy
        if bias is not None:
            out = torch.baddbmm(
                bias.reshape(oc, oh * ow).t().unsqueeze(2), weight, cols
            )  # (L, C', N)
        else:
            out = torch.bmm(weight, cols)
        ctx.save_for_backward(weight, cols)
        ctx.geometry = (x.shape, kernel_size, stride, padding, out_shape, bias is not None)
        # (L, C', N) -> (N, H', W', C') in one copy: a channels_last output, like Dense2d's
        return out.permute(2, 0, 1).reshape(n, oh, ow, oc).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad_out):
        weight, cols = ctx.saved_tensors
        (n, c, h, w), (kh, kw), (sh, sw), (ph, pw), (oc, oh, ow), has_bias = ctx.geometry
        grad_l = grad_out.permute(2, 3, 1, 0).reshape(
            oh * ow, oc, n
        )  # (L, C', N), one copy at most
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_cols = torch.bmm(weight.transpose(1, 2), grad_l).view(oh, ow, c, kh, kw, n)
            grad_padded = grad_l.new_zeros(c, h + 2 * ph, w + 2 * pw, n)
            for ki in range(kh):
                for kj in range(kw):
                    grad_padded[
                        :, ki : ki + sh * (oh - 1) + 1 : sh, kj : kj + sw * (ow - 1) + 1 : sw
                    ] += grad_cols[:, :, :, ki, kj].permute(2, 0, 1, 3)
            grad_x = grad_padded[:, ph : ph + h, pw : pw + w].permute(3, 0, 1, 2).contiguous()
        if ctx.needs_input_grad[1]:
            grad_weight = torch.bmm(grad_l, cols.transpose(1, 2))  # (L, C', K)
        if has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_l.sum(2).t().reshape(oc, oh, ow)
        return grad_x, grad_weight, grad_bias, None, None, None, None


def _dense_offset_view(grid: torch.Tensor, layer: Dense2d, ki, kj, i0, i1, j0, j1) -> torch.Tensor:
    """Strided view (C'', n_i, n_j, C) of `grid`, a (H', W', C'', H*W*C) view of a Dense2d weight
    or of a block of C'' of its output channels (any strides), at the entries that hold kernel
    offset (ki, kj)."""
    c, h, w = layer.in_shape
    (sh, sw), (ph, pw) = layer.stride, layer.padding
    stride_i, stride_j, stride_o, stride_col = grid.stride()
    # column (y, x, ch) = (y*W + x)*C + ch, with y = i*sh + ki - ph and x = j*sw + kj - pw
    strides = (
        stride_o,
        stride_i + sh * w * c * stride_col,
        stride_j + sw * c * stride_col,
        stride_col,
    )
    offset = (
        i0 * stride_i
        + j0 * stride_j
        + ((i0 * sh + ki - ph) * w + (j0 * sw + kj - pw)) * c * stride_col
    )
    return grid.as_strided(
        (grid.shape[2], i1 - i0, j1 - j0, c), strides, grid.storage_offset() + offset
    )


def dense_channel_grid(layer: Dense2d, weight: torch.Tensor | None = None) -> torch.Tensor:
    """A contiguous Dense2d weight as a (H', W', C', H*W*C) view; slicing its third dim gives
    blocks of whole output channels that `tied_views` accepts."""
    weight = layer.weight.detach() if weight is None else weight
    if not weight.is_contiguous():
        raise NeedleError(
            "tied_views: the Dense2d weight must be contiguous; call .contiguous() first"
        )
    (channels, height, width) = layer.out_shape
    return weight.view(height, width, channels, -1)


def tied_views(
    layer: nn.Module, weight: torch.Tensor | None = None
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """For each kernel offset (ki, kj) with at least one real input pixel: (ki, kj, view) where
    view has shape (C', n_i, n_j, C) and holds, for every output channel o and input channel c, the
    entries of the layer's weight that a CNN ties to w[o, c, ki, kj] (only output positions where
    that offset lands on a real pixel). The views of all offsets are disjoint; for Dense2d they
    cover exactly the locality blocks, for LocallyConnected2d all weights that ever see real input.

    `weight` defaults to layer.weight (detached); for a Dense2d it is either the contiguous weight
    matrix or a 4-d slice of `dense_channel_grid` (a block of output channels, which then play C')."""
    if weight is None:
        weight = layer.weight.detach()
    if isinstance(layer, Dense2d):
        grid = weight if weight.dim() == 4 else dense_channel_grid(layer, weight)
        for ki, kj, i0, i1, j0, j1 in layer.offset_ranges():
            yield ki, kj, _dense_offset_view(grid, layer, ki, kj, i0, i1, j0, j1)
    elif isinstance(layer, LocallyConnected2d):
        (c, _, _), (oc, oh, ow) = layer.in_shape, layer.out_shape
        kh, kw = layer.kernel_size
        grid = weight.view(oh, ow, oc, c, kh, kw)
        for ki, kj, i0, i1, j0, j1 in layer.offset_ranges():
            yield ki, kj, grid[i0:i1, j0:j1, :, :, ki, kj].permute(2, 0, 1, 3)
    else:
        raise NeedleError(
            f"tied_views: expected Dense2d or LocallyConnected2d, got {type(layer).__name__}"
        )


def _check_conv(name: str, conv: nn.Conv2d) -> None:
    if (
        conv.groups != 1
        or _pair(conv.dilation) != (1, 1)
        or conv.padding_mode != "zeros"
        or isinstance(conv.padding, str)
    ):
        raise NeedleError(
            f"layer {name}: only Conv2d with groups=1, dilation=1 and integer zero "
            "padding can be embedded; change the CNN definition"
        )


def _input_shape(cnn: nn.Sequential, input_shape) -> tuple[int, int, int]:
    shape = input_shape if input_shape is not None else getattr(cnn, "input_shape", None)
    if shape is None:
        raise NeedleError(
            "the CNN has no input_shape attribute; build it with needle.models.build_cnn "
            "or pass input_shape=(C, H, W)"
        )
    return tuple(shape)


def _replace_convs(cnn: nn.Sequential, input_shape, make_layer, copy_other) -> nn.Sequential:
    shape = _input_shape(cnn, input_shape)
    shapes = trace_shapes(cnn, shape)
    layers = []
    for (name, layer), in_shape in zip(cnn.named_children(), shapes):
        if isinstance(layer, nn.Conv2d):
            _check_conv(name, layer)
            layers.append((name, make_layer(layer, in_shape)))
        else:
            layers.append((name, copy_other(layer)))
    net = nn.Sequential(OrderedDict(_pool_before_relu(layers)))
    net.input_shape = shape
    net.train(cnn.training)
    return net


def _pool_before_relu(layers: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """Swap every ReLU that feeds a MaxPool2d: max-pooling then ReLU is the same function with
    the same gradients (ReLU is monotone, so it commutes with max), on 4x fewer values."""
    layers = list(layers)
    for index in range(len(layers) - 1):
        if isinstance(layers[index][1], nn.ReLU) and isinstance(layers[index + 1][1], nn.MaxPool2d):
            layers[index], layers[index + 1] = layers[index + 1], layers[index]
    return layers


def _geometry_args(conv: nn.Conv2d, in_shape):
    return dict(
        in_shape=in_shape,
        out_channels=conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=conv.bias is not None,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )


@torch.no_grad()
def conv_to_dense(conv: nn.Conv2d, in_shape) -> Dense2d:
    """The Dense2d computing exactly `conv` on inputs of shape `in_shape` (padding folded)."""
    dense = Dense2d(**_geometry_args(conv, in_shape), initialize=False)  # zeros
    kernel = conv.weight.detach()
    for ki, kj, view in tied_views(dense, dense.weight.detach()):
        o, ni, nj, c = view.shape
        view.copy_(kernel[:, :, ki, kj][:, None, None, :].expand(o, ni, nj, c))
    if conv.bias is not None:
        dense.bias.view(-1, conv.out_channels).copy_(conv.bias.detach()[None, :])
    return dense


@torch.no_grad()
def conv_to_local(conv: nn.Conv2d, in_shape) -> LocallyConnected2d:
    """The LocallyConnected2d computing exactly `conv`: the kernel copied to every position."""
    local = LocallyConnected2d(**_geometry_args(conv, in_shape), initialize=False)
    local.weight.copy_(
        conv.weight.detach().reshape(1, conv.out_channels, -1).expand_as(local.weight)
    )
    if conv.bias is not None:
        local.bias.copy_(conv.bias.detach()[:, None, None].expand_as(local.bias))
    return local


def to_efcn(cnn: nn.Sequential, input_shape=None) -> nn.Sequential:
    """The eFCN of `cnn`: every Conv2d replaced by its exact Dense2d (same child names), every other
    layer deep-copied. Same function as the CNN. `input_shape` defaults to cnn.input_shape."""
    return _replace_convs(cnn, input_shape, conv_to_dense, copy.deepcopy)


def to_elcn(cnn: nn.Sequential, input_shape=None) -> nn.Sequential:
    """The eLCN of `cnn`: every Conv2d replaced by a LocallyConnected2d holding a copy of its
    kernel at every output position (locality kept, sharing released). Same function as the CNN."""
    return _replace_convs(cnn, input_shape, conv_to_local, copy.deepcopy)


def _fresh_copy(layer: nn.Module) -> nn.Module:
    layer = copy.deepcopy(layer)
    for module in layer.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return layer


def standard_fcn(cnn: nn.Sequential, input_shape=None, *, fan_in: str = "real") -> nn.Sequential:
    """A standard FCN with exactly the eFCN's layer shapes (same pooling and head), all weights
    freshly initialised with PyTorch's default (nn.Linear init, fan_in = C*H*W for Dense2d)."""

    def dense(conv, in_shape):
        layer = Dense2d(**_geometry_args(conv, in_shape), initialize=True)
        if fan_in == "padded":  # STAND-IN until the core branch lands: the authors' padded fan-in
            c, h, w = layer.in_shape
            (ph, pw) = layer.padding
            bound = 1 / math.sqrt(c * (h + 2 * ph) * (w + 2 * pw))
            with torch.no_grad():
                layer.weight.uniform_(-bound, bound)
                layer.bias.uniform_(-bound, bound)
        return layer

    return _replace_convs(cnn, input_shape, dense, _fresh_copy)


def parameter_counts(cnn: nn.Sequential, input_shape=None) -> dict[str, int]:
    """Parameter counts of the CNN, its eLCN, its eFCN (padding folded) and the standard FCN
    (same shapes as the eFCN), by shape arithmetic (nothing is allocated)."""
    shapes = trace_shapes(cnn, _input_shape(cnn, input_shape))
    counts = {"cnn": 0, "elcn": 0, "efcn": 0}
    for (name, layer), in_shape, out_shape in zip(cnn.named_children(), shapes, shapes[1:]):
        own = sum(p.numel() for p in layer.parameters())
        counts["cnn"] += own
        if isinstance(layer, nn.Conv2d):
            _check_conv(name, layer)
            positions = out_shape[1] * out_shape[2]
            biases = math.prod(out_shape) if layer.bias is not None else 0
            counts["efcn"] += math.prod(out_shape) * math.prod(in_shape) + biases
            counts["elcn"] += positions * layer.weight.numel() + biases
        else:
            counts["efcn"] += own
            counts["elcn"] += own
    counts["fcn"] = counts["efcn"]
    return counts


def efcn_bytes(cnn: nn.Sequential, dtype: torch.dtype = torch.float32, input_shape=None) -> int:
    """Bytes taken by the eFCN's parameters in `dtype` (to check it fits a device)."""
    return parameter_counts(cnn, input_shape)["efcn"] * torch.empty((), dtype=dtype).element_size()
