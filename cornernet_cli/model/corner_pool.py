"""Corner pooling (paper section 3.4).

For a feature map x of shape [..., H, W]:

    top:    out[..., i, j] = max_{k >= i} x[..., k, j]   (looks down the column, toward the bottom)
    left:   out[..., i, j] = max_{k >= j} x[..., i, k]   (looks along the row, toward the right)
    bottom: out[..., i, j] = max_{k <= i} x[..., k, j]
    right:  out[..., i, j] = max_{k <= j} x[..., i, k]

The top-left corner module sums top and left pooling; the bottom-right module sums bottom and right.

Two implementations give identical values:
- `corner_pool`: a running max (O(H*W) per channel), the training/inference default: on the CPU one pass
  of slice-wise maxima with its own backward (`_ScanMax`), elsewhere torch.cummax;
- `corner_pool_doubling`: log-step doubling with the max of shifted slices, using only Slice, Max and
  Concat, so the network exports to ONNX with standard operators.
"""

from __future__ import annotations

import torch
from torch import nn

DIRECTIONS = ("top", "left", "bottom", "right")

# direction -> (dim counted from the end, True if the max runs toward larger indices)
_AXES = {"top": (-2, True), "left": (-1, True), "bottom": (-2, False), "right": (-1, False)}


def _axis(direction: str) -> tuple[int, bool]:
    try:
        return _AXES[direction]
    except KeyError:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}") from None


def corner_pool(x: torch.Tensor, direction: str) -> torch.Tensor:
    """Corner pooling by cumulative max.

    Args:
        x: [..., H, W] feature map (any float dtype, any device).
        direction: ``top``, ``left``, ``bottom`` or ``right`` (see the module docstring).
    Returns:
        Tensor of x's shape and dtype; gradients flow to the arg-max positions.
    """
    dim, toward_end = _axis(direction)
    if x.device.type == "cpu":
        return _ScanMax.apply(x, dim, toward_end)
    if toward_end:
        return torch.cummax(x.flip(dim), dim).values.flip(dim)
    return torch.cummax(x, dim).values


class _ScanMax(torch.autograd.Function):
    """Running max along `dim` as one slice-wise pass (CPU): out[i] = max(out[i - 1], x[i]), walking toward
    smaller indices when `toward_end`. No flipped copies, and backward keeps only a bool mask (cummax keeps
    int64 indices). Ties go to the position met last in the walk, as torch.cummax's arg-max does, so values
    and gradients equal the cummax formulation exactly.

    Backward: x[t] is the arg-max of out[t] and of the following outputs up to the next position where
    x == out (a new maximum), so its gradient is the sum of grad_out over that run (zero where x != out).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int, toward_end: bool) -> torch.Tensor:
        out = torch.empty_like(x)
        length = x.shape[dim]
        order = range(length - 1, -1, -1) if toward_end else range(length)
        prev = None
        for i in order:
            oi = out.select(dim, i)
            if prev is None:
                oi.copy_(x.select(dim, i))
            else:
                torch.maximum(x.select(dim, i), prev, out=oi)
            prev = oi
        ctx.save_for_backward(x == out)
        ctx.dim, ctx.toward_end = dim, toward_end
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (is_max,) = ctx.saved_tensors
        dim = ctx.dim
        length = grad.shape[dim]
        order = range(length) if ctx.toward_end else range(length - 1, -1, -1)  # the forward walk, reversed
        grad_x = torch.empty_like(grad, memory_format=torch.preserve_format)
        acc = None
        for i in order:
            gi, mi = grad.select(dim, i), is_max.select(dim, i)
            acc = gi.clone() if acc is None else acc.add_(gi)
            torch.mul(acc, mi, out=grad_x.select(dim, i))
            acc.masked_fill_(mi, 0)
        return grad_x, None, None


def corner_pool_doubling(x: torch.Tensor, direction: str, max_len: int | None = None) -> torch.Tensor:
    """Corner pooling by log-step doubling (export-friendly, same values as `corner_pool`).

    After the step with shift s, every position holds the max over a window of 2s positions,
    so ceil(log2(L)) steps cover a length L.

    Args:
        x: [..., H, W] feature map.
        direction: ``top``, ``left``, ``bottom`` or ``right``.
        max_len: the largest length the pooled axis may have. By default the current length; an ONNX
            export with dynamic sizes passes the largest size it must support (extra steps are no-ops).
    """
    dim, toward_end = _axis(direction)
    length = x.shape[dim] if max_len is None else max_len
    y = x
    shift = 1
    while shift < length:
        if toward_end:  # y[i] = max(y[i], y[i + s]); the last s positions stay
            head = torch.maximum(_slice(y, dim, None, -shift), _slice(y, dim, shift, None))
            y = torch.cat([head, _slice(y, dim, -shift, None)], dim)
        else:  # y[i] = max(y[i], y[i - s]); the first s positions stay
            tail = torch.maximum(_slice(y, dim, shift, None), _slice(y, dim, None, -shift))
            y = torch.cat([_slice(y, dim, None, shift), tail], dim)
        shift *= 2
    return y


def _slice(x: torch.Tensor, dim: int, start: int | None, stop: int | None) -> torch.Tensor:
    index = [slice(None)] * x.dim()
    index[dim] = slice(start, stop)
    return x[tuple(index)]


class CornerPool(nn.Module):
    """Sum of two corner poolings, e.g. ``CornerPool(("top", "left"))`` for the top-left module.

    ``enabled=False`` keeps the module but passes each input through unchanged (the paper's
    "without corner pooling" ablation keeps every layer). ``export_friendly=True`` switches to
    `corner_pool_doubling` with ``max_len`` (used by ONNX export).
    """

    def __init__(self, directions: tuple[str, str], enabled: bool = True):
        super().__init__()
        for d in directions:
            _axis(d)
        self.directions = tuple(directions)
        self.enabled = enabled
        self.export_friendly = False
        self.max_len: int | None = None

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b: [B, C, H, W] inputs of the two branches -> pool(a, dir0) + pool(b, dir1)."""
        if not self.enabled:
            return a + b
        if self.export_friendly:
            d0, d1 = self.directions
            return corner_pool_doubling(a, d0, self.max_len) + corner_pool_doubling(b, d1, self.max_len)
        return corner_pool(a, self.directions[0]) + corner_pool(b, self.directions[1])

    def extra_repr(self) -> str:
        return f"directions={self.directions}, enabled={self.enabled}"
