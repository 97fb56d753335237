"""Exact embeddings of a CNN into a fully-connected net (eFCN) and a locally connected net (eLCN).

A Conv2d with input C x H x W and output C' x H' x W' becomes `Dense2d`, a dense layer whose weight
has shape (C'*H'*W', C*H*W): row (o, i, j) holds kernel w[o] at the input block that output
position (i, j) sees, zeros elsewhere, and bias b[o] is repeated at every position. Pooling, ReLU,
dropout and linear layers are copied unchanged, so the result computes the same function.

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
lattice in memory, i.e. one strided view (C', n_i, n_j, C) of the flat weight; one `copy_` fills
it. Output positions whose input pixel for that offset lies in the padding are simply left out of
the view (that is the folding). `tied_views` exposes the same views for projection and deviation.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from typing import Iterator

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
            raise NeedleError(f"{type(self).__name__}: in_shape must be (C, H, W) of positive ints and "
                              f"out_channels positive, got in_shape={in_shape}, out_channels={out_channels}")
        self.in_shape = in_shape
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        out_hw = tuple(conv_output_size(s, k, st, p) for s, k, st, p in
                       zip(in_shape[1:], self.kernel_size, self.stride, self.padding))
        if min(out_hw) < 1 or min(self.stride) < 1 or min(self.kernel_size) < 1 or min(self.padding) < 0:
            raise NeedleError(f"{type(self).__name__}: kernel {self.kernel_size}, stride {self.stride}, "
                              f"padding {self.padding} give an empty output on input {in_shape}; "
                              "use a smaller kernel or larger input")
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
        return (f"in_shape={self.in_shape}, out_shape={self.out_shape}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")


class Dense2d(_ConvGeometry):
    """Fully-connected layer between feature maps: (N, C, H, W) -> (N, C', H', W') through a dense
    `weight` of shape (C'*H'*W', C*H*W) and `bias` of shape (C'*H'*W',). The conv geometry
    (kernel_size, stride, padding) says where the CNN subspace lies; the layer itself is dense.

    `initialize=True` gives nn.Linear's default init (fan_in = C*H*W); `initialize=False` gives
    zeros (what the embedding fills in, and enough for loading a state_dict)."""

    def __init__(self, in_shape, out_channels, kernel_size, stride=1, padding=0, bias=True, *,
                 initialize=True, device=None, dtype=None):
        super().__init__()
        self._set_geometry(in_shape, out_channels, kernel_size, stride, padding)
        rows, cols = math.prod(self.out_shape), math.prod(self.in_shape)
        self.weight = nn.Parameter(torch.zeros(rows, cols, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(rows, device=device, dtype=dtype)) if bias else None
        if initialize:
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Exactly nn.Linear.reset_parameters (kaiming_uniform a=sqrt(5), bias U(+-1/sqrt(fan_in)))."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight.shape[1])
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        out = (torch.addmm(self.bias, flat, self.weight.t()) if self.bias is not None
               else flat @ self.weight.t())
        return out.view(x.shape[0], *self.out_shape)


class LocallyConnected2d(_ConvGeometry):
    """Convolution without weight sharing: every output position (i, j) has its own kernel.
    `weight` has shape (H'*W', C', C*kh*kw) (position, out channel, unfolded input patch in
    F.unfold's (c, ki, kj) order) and `bias` shape (C', H', W'). Padding is zero padding; weights
    that only ever see padded pixels exist but never affect the output."""

    def __init__(self, in_shape, out_channels, kernel_size, stride=1, padding=0, bias=True, *,
                 initialize=True, device=None, dtype=None):
        super().__init__()
        self._set_geometry(in_shape, out_channels, kernel_size, stride, padding)
        c, (oc, oh, ow) = self.in_shape[0], self.out_shape
        patch = c * self.kernel_size[0] * self.kernel_size[1]
        self.weight = nn.Parameter(torch.zeros(oh * ow, oc, patch, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(oc, oh, ow, device=device, dtype=dtype)) if bias else None
        if initialize:
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Conv2d's default init per position (fan_in = C*kh*kw)."""
        bound = 1 / math.sqrt(self.weight.shape[2])
        nn.init.uniform_(self.weight, -bound, bound)  # == kaiming_uniform(a=sqrt(5)) with this fan_in
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LocallyConnected.apply(x, self.weight, self.bias, self.kernel_size, self.stride,
                                       self.padding, self.out_shape)


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
        windows = batch_last.unfold(1, kh, sh)[:, :oh].unfold(2, kw, sw)[:, :, :ow]  # (C, H', W', N, kh, kw)
        cols = windows.permute(1, 2, 0, 4, 5, 3).reshape(oh * ow, c * kh * kw, n)  # (L, K, N) one copy
        if bias is not None:
            out = torch.baddbmm(bias.reshape(oc, oh * ow).t().unsqueeze(2), weight, cols)  # (L, C', N)
        else:
            out = torch.bmm(weight, cols)
        ctx.save_for_backward(weight, cols)
        ctx.geometry = (x.shape, kernel_size, stride, padding, out_shape, bias is not None)
        return out.permute(2, 1, 0).reshape(n, oc, oh, ow)

    @staticmethod
    def backward(ctx, grad_out):
        weight, cols = ctx.saved_tensors
        (n, c, h, w), (kh, kw), (sh, sw), (ph, pw), (oc, oh, ow), has_bias = ctx.geometry
        grad_l = grad_out.reshape(n, oc, oh * ow).permute(2, 1, 0).contiguous()  # (L, C', N)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_cols = torch.bmm(weight.transpose(1, 2), grad_l).view(oh, ow, c, kh, kw, n)
            grad_padded = grad_l.new_zeros(c, h + 2 * ph, w + 2 * pw, n)
            for ki in range(kh):
                for kj in range(kw):
                    grad_padded[:, ki:ki + sh * (oh - 1) + 1:sh, kj:kj + sw * (ow - 1) + 1:sw] += \
                        grad_cols[:, :, :, ki, kj].permute(2, 0, 1, 3)
            grad_x = grad_padded[:, ph:ph + h, pw:pw + w].permute(3, 0, 1, 2).contiguous()
        if ctx.needs_input_grad[1]:
            grad_weight = torch.bmm(grad_l, cols.transpose(1, 2))  # (L, C', K)
        if has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_l.sum(2).t().reshape(oc, oh, ow)
        return grad_x, grad_weight, grad_bias, None, None, None, None


def _dense_offset_view(weight: torch.Tensor, layer: Dense2d, ki, kj, i0, i1, j0, j1) -> torch.Tensor:
    """Strided view (n_rows // (H'*W'), n_i, n_j, C) of a contiguous dense weight (or a slice of
    whole output channels of it) at the entries that hold kernel offset (ki, kj)."""
    c, h, w = layer.in_shape
    _, oh, ow = layer.out_shape
    (sh, sw), (ph, pw) = layer.stride, layer.padding
    cols = c * h * w
    channels = weight.shape[0] // (oh * ow)
    # row (o, i, j) = (o*H' + i)*W' + j; column (ch, y, x) with y = i*sh + ki - ph, x = j*sw + kj - pw
    strides = (oh * ow * cols, ow * cols + sh * w, cols + sw, h * w)
    offset = i0 * ow * cols + j0 * cols + (i0 * sh + ki - ph) * w + (j0 * sw + kj - pw)
    return weight.as_strided((channels, i1 - i0, j1 - j0, c), strides,
                             weight.storage_offset() + offset)


def tied_views(layer: nn.Module, weight: torch.Tensor | None = None
               ) -> Iterator[tuple[int, int, torch.Tensor]]:
    """For each kernel offset (ki, kj) with at least one real input pixel: (ki, kj, view) where
    view has shape (C', n_i, n_j, C) and holds, for every output channel o and input channel c, the
    entries of the layer's weight that a CNN ties to w[o, c, ki, kj] (only output positions where
    that offset lands on a real pixel). The views of all offsets are disjoint; for Dense2d they
    cover exactly the locality blocks, for LocallyConnected2d all weights that ever see real input.

    `weight` defaults to layer.weight (detached); it must be contiguous with the layer's layout."""
    if weight is None:
        weight = layer.weight.detach()
    if isinstance(layer, Dense2d):
        if not weight.is_contiguous():
            raise NeedleError("tied_views: the Dense2d weight must be contiguous; call .contiguous() first")
        for ki, kj, i0, i1, j0, j1 in layer.offset_ranges():
            yield ki, kj, _dense_offset_view(weight, layer, ki, kj, i0, i1, j0, j1)
    elif isinstance(layer, LocallyConnected2d):
        (c, _, _), (oc, oh, ow) = layer.in_shape, layer.out_shape
        kh, kw = layer.kernel_size
        grid = weight.view(oh, ow, oc, c, kh, kw)
        for ki, kj, i0, i1, j0, j1 in layer.offset_ranges():
            yield ki, kj, grid[i0:i1, j0:j1, :, :, ki, kj].permute(2, 0, 1, 3)
    else:
        raise NeedleError(f"tied_views: expected Dense2d or LocallyConnected2d, got {type(layer).__name__}")


def _check_conv(name: str, conv: nn.Conv2d) -> None:
    if conv.groups != 1 or _pair(conv.dilation) != (1, 1) or conv.padding_mode != "zeros" \
            or isinstance(conv.padding, str):
        raise NeedleError(f"layer {name}: only Conv2d with groups=1, dilation=1 and integer zero "
                          "padding can be embedded; change the CNN definition")


def _input_shape(cnn: nn.Sequential, input_shape) -> tuple[int, int, int]:
    shape = input_shape if input_shape is not None else getattr(cnn, "input_shape", None)
    if shape is None:
        raise NeedleError("the CNN has no input_shape attribute; build it with needle.models.build_cnn "
                          "or pass input_shape=(C, H, W)")
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
    net = nn.Sequential(OrderedDict(layers))
    net.input_shape = shape
    net.train(cnn.training)
    return net


def _geometry_args(conv: nn.Conv2d, in_shape):
    return dict(in_shape=in_shape, out_channels=conv.out_channels, kernel_size=conv.kernel_size,
                stride=conv.stride, padding=conv.padding, bias=conv.bias is not None,
                device=conv.weight.device, dtype=conv.weight.dtype)


@torch.no_grad()
def conv_to_dense(conv: nn.Conv2d, in_shape) -> Dense2d:
    """The Dense2d computing exactly `conv` on inputs of shape `in_shape` (padding folded)."""
    dense = Dense2d(**_geometry_args(conv, in_shape), initialize=False)  # zeros
    kernel = conv.weight.detach()
    for ki, kj, view in tied_views(dense, dense.weight.detach()):
        o, ni, nj, c = view.shape
        view.copy_(kernel[:, :, ki, kj][:, None, None, :].expand(o, ni, nj, c))
    if conv.bias is not None:
        dense.bias.view(conv.out_channels, -1).copy_(conv.bias.detach()[:, None])
    return dense


@torch.no_grad()
def conv_to_local(conv: nn.Conv2d, in_shape) -> LocallyConnected2d:
    """The LocallyConnected2d computing exactly `conv`: the kernel copied to every position."""
    local = LocallyConnected2d(**_geometry_args(conv, in_shape), initialize=False)
    local.weight.copy_(conv.weight.detach().reshape(1, conv.out_channels, -1).expand_as(local.weight))
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


def standard_fcn(cnn: nn.Sequential, input_shape=None) -> nn.Sequential:
    """A standard FCN with exactly the eFCN's layer shapes (same pooling and head), all weights
    freshly initialised with PyTorch's default (nn.Linear init, fan_in = C*H*W for Dense2d)."""
    return _replace_convs(
        cnn, input_shape,
        lambda conv, in_shape: Dense2d(**_geometry_args(conv, in_shape), initialize=True),
        _fresh_copy)


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
