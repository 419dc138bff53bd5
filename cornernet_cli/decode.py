"""Decoding corner heatmaps into boxes (paper section 4.1, "Testing Details").

Sigmoid scores, local maxima in a kernel x kernel window (the paper's 3 x 3 max-pool NMS), the top k
corners of each type, every same-class (top-left, bottom-right) pair whose embeddings differ by at most
ae_threshold and whose box is not inverted, scored by the mean of its corner scores.

Speed: the original applies a sigmoid and a max-pool to the whole map and takes the top k of all of it.
Sigmoid is monotonic, so the strongest corners are found on the logits. On a large map, t, the m-th largest
of the rows' maxima, splits it: every cell above t lies in those m rows, so the cells >= t there hold every
local maximum above t, and only they get their window checked (in sigmoid space, the original's exact test
`maxpool(p) == p`). If k of them are local maxima, their top k are the map's; if not, m grows. Small maps,
and the rare map where that fails, take the whole-map path, with the window maximum as shifted maxima
instead of a max-pool (the same values, several times faster on the CPU). Same corners, a fraction of the
work (see docs/performance.md).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from cornernet_cli.targets import gather_at


def window_max(p: torch.Tensor, *, kernel: int) -> torch.Tensor:
    """Max over each cell's kernel x kernel window, cut at the map's edges: p [..., h, w] -> same shape.

    The values of `F.max_pool2d(p, kernel, stride=1, padding=kernel // 2)` (a max is exact, and separable),
    as shifted maxima along each axis: on this CPU the max-pool costs about 7 ns a cell, several times these
    passes. A selection test, so no gradient (the updates are in place).
    """
    half = kernel // 2
    out = p.detach()
    for dim in (-1, -2):
        src, out = out, out.clone()  # each axis reads the previous result, never a half-updated one
        size = out.shape[dim]
        for shift in range(1, min(half, size - 1) + 1):
            ahead, behind = out.narrow(dim, 0, size - shift), out.narrow(dim, shift, size - shift)
            torch.maximum(ahead, src.narrow(dim, shift, size - shift), out=ahead)  # cell i sees i + shift
            torch.maximum(behind, src.narrow(dim, 0, size - shift), out=behind)  # and i - shift
    return out


def _topk_dense(heat: torch.Tensor, *, k: int, kernel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The original algorithm, sigmoid, window-max NMS (non-maxima set to 0) and top k of the whole map, with
    the window maximum of `window_max`: the values of the original's max-pool, so the same result to the bit
    (ties, and the non-maxima scored 0 that fill the k places of a map with fewer maxima, included).

    heat: [B, C, h, w] logits. Returns scores [B, k] (probabilities) and flat indices [B, k] into C*h*w.
    """
    p = torch.sigmoid(heat.float())
    p = p * (window_max(p, kernel=kernel) == p).float()
    return torch.topk(p.reshape(heat.shape[0], -1), k)


def _window_is_max(flat: torch.Tensor, *, row: torch.Tensor, x: torch.Tensor, h: int, w: int,
                   kernel: int) -> torch.Tensor:
    """Is each cell's sigmoid the max of its kernel window (the window cut at the map's edges)?

    flat: one image's logits [C*h*w]; row: the cells' rows [n] in the [C*h, w] view; x: their columns [n].
    Returns bool [n]. Window offsets lead and cells trail ([kernel, n], [kernel, kernel, n]): broadcasts and
    reductions then run along n, several times faster than over trailing dims of size kernel.
    """
    y = row % h
    half = kernel // 2
    offsets = torch.arange(-half, half + 1, device=row.device).unsqueeze(-1)
    # clamped neighbours stay inside the window (and the plane), so the max over them is the window's
    ny = (offsets + y).clamp_(0, h - 1).add_(row - y).mul_(w)  # [kernel, n]: where each neighbour row starts
    nx = (offsets + x).clamp_(0, w - 1)
    p = torch.sigmoid(flat.take(ny.unsqueeze(1) + nx.unsqueeze(0)))  # [kernel, kernel, n]
    return p[half, half] >= p.flatten(0, 1).amax(dim=0)  # the centre against its window, one sigmoid for both


def _topk_upper_set(flat: torch.Tensor, row_max: torch.Tensor, *, k: int, h: int, w: int,
                    kernel: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """One image's top k local maxima, found among the cells of its m strongest rows that reach t, the m-th
    largest row maximum.

    flat: logits [C*h*w]; row_max: [C*h] maxima of its rows of w. Every cell above t lies in those rows (its
    row's maximum is above t), so every local maximum left out is <= t; the m row maxima are m cells >= t.
    If k of the cells found are local maxima, the k-th of them is >= t, so their top k are the map's (up to
    exact ties with t). If not, m grows 4x, up to a quarter of the rows. Returns logits [k] and flat indices
    [k] into C*h*w, sorted descending, or None.
    """
    m = 4 * k
    while 4 * m <= len(row_max):
        top, top_rows = torch.topk(row_max, m)
        rows = flat.view(-1, w).index_select(0, top_rows)  # [m, w]
        pick_row, x = (rows >= top[-1]).nonzero(as_tuple=True)
        row = top_rows[pick_row]
        is_max = _window_is_max(flat, row=row, x=x, h=h, w=w, kernel=kernel)
        if int(is_max.sum()) >= k:
            values, order = torch.topk(torch.where(is_max, rows[pick_row, x], float("-inf")), k)
            return values, row[order] * w + x[order]
        m *= 4
    return None


def topk_corners(heat: torch.Tensor, *, k: int, kernel: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k local maxima of sigmoid(heat): heat [B, C, h, w] logits -> (scores [B, k], flat index [B, k]).

    Scores are probabilities, sorted descending; the flat index runs over C*h*w (class = index // (h*w)).
    Same result as the original whole-map selection (`_topk_dense`; up to the order of exactly tied scores).
    kernel must be odd.
    """
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be a positive odd number, got {kernel}")
    b, c, h, w = heat.shape
    flat = heat.float().reshape(b, -1)
    k = min(k, flat.shape[1])
    if kernel == 1:
        values, index = torch.topk(flat, k)
        return torch.sigmoid(values), index
    if 16 * k > c * h:  # the first round's 4k rows would be over a quarter of the map: check all of it
        return _topk_dense(heat, k=k, kernel=kernel)
    row_max = flat.view(b, c * h, w).amax(dim=-1)
    # one image at a time, each growing its own m: its ops are small, and a loop over them costs little
    picked = [_topk_upper_set(flat[i], row_max[i], k=k, h=h, w=w, kernel=kernel) for i in range(b)]
    if any(found is None for found in picked):  # rare (a map of few maxima): the whole batch the plain way
        return _topk_dense(heat, k=k, kernel=kernel)
    values, index = zip(*picked)
    return torch.sigmoid(torch.stack(values)), torch.stack(index)


@contextlib.contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run the enclosed CPU ops on one torch thread (restored afterwards; nothing changes on a GPU).

    device: where the decode's tensors live. The decode's full-map passes are memory-bound and its other ops
    are small, so extra threads gain little, and each op waits at a thread barrier for every thread: on a
    machine whose cores are busy that wait dominates. One thread for the whole decode replaced single-threaded
    NumPy for the two full-map passes only (1.1-1.6x faster side by side, docs/performance.md).
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def decode(
    tl_heat: torch.Tensor,
    br_heat: torch.Tensor,
    tl_emb: torch.Tensor,
    br_emb: torch.Tensor,
    tl_off: torch.Tensor,
    br_off: torch.Tensor,
    ct_heat: torch.Tensor | None = None,
    ct_off: torch.Tensor | None = None,
    *,
    k: int = 100,
    kernel: int = 3,
    ae_threshold: float = 0.5,
    num_dets: int = 1000,
    centre_n: float = 3.0,
) -> torch.Tensor:
    """Pair corners into boxes, vectorised over the batch.

    tl_heat, br_heat: [B, C, h, w] logits; tl_emb, br_emb: [B, 1, h, w]; tl_off, br_off: [B, 2, h, w]
    (x, y). Returns [B, num_dets, 8] float32: x1, y1, x2, y2 in output-map coordinates (cell + offset),
    score, tl_score, br_score, class index; sorted by score. Rejected pairs (different classes,
    |tl_emb - br_emb| > ae_threshold, x2 < x1 or y2 < y1) have score -1. If num_dets > k * k the rows
    past k * k are padding with score -1. k is capped at C * h * w.

    ct_heat [B, C, h, w] logits and ct_off [B, 2, h, w] (a model with a centre head; not in the paper): the
    centre check of CenterNet's keypoint triplets (Duan et al. 2019). The top k centre keypoints are taken
    like the corners; a pair is kept only if a centre of its class lies in the box's central region (the
    middle 1 / centre_n of its width and height, borders included), and then scored by the mean of its two
    corner scores and the best such centre's score. Other pairs are rejected (-1), and the rows are re-sorted.
    ct_heat must have tl_heat's shape and ct_off [B, 2, h, w]; ct_off without ct_heat is ignored, and
    ct_heat without ct_off takes each centre at its cell's middle.
    """
    with one_cpu_thread(tl_heat.device):
        return _decode(tl_heat, br_heat, tl_emb, br_emb, tl_off, br_off, ct_heat, ct_off, k=k, kernel=kernel,
                       ae_threshold=ae_threshold, num_dets=num_dets, centre_n=centre_n)


def _decode(tl_heat: torch.Tensor, br_heat: torch.Tensor, tl_emb: torch.Tensor, br_emb: torch.Tensor,
            tl_off: torch.Tensor, br_off: torch.Tensor, ct_heat: torch.Tensor | None, ct_off: torch.Tensor | None, *,
            k: int, kernel: int, ae_threshold: float, num_dets: int, centre_n: float) -> torch.Tensor:
    """`decode`'s work, in whatever thread setting the caller chose (same arguments and shapes)."""
    b, c, h, w = tl_heat.shape
    if ct_heat is not None:  # checked before the pairing work, not after it
        if ct_heat.shape != tl_heat.shape or (ct_off is not None and tuple(ct_off.shape) != (b, 2, h, w)):
            got = f"ct_heat {tuple(ct_heat.shape)}" + (f", ct_off {tuple(ct_off.shape)}" if ct_off is not None else "")
            raise ValueError(f"centre heads {got} do not match the corner heads {tuple(tl_heat.shape)}")
        if not (math.isfinite(centre_n) and centre_n >= 1):
            raise ValueError(f"centre_n must be >= 1 (the central region is 1/n of the box), got {centre_n}")
    k = min(k, c * h * w)
    tl_score, tl_idx = topk_corners(tl_heat, k=k, kernel=kernel)
    br_score, br_idx = topk_corners(br_heat, k=k, kernel=kernel)
    tl_cls, br_cls = tl_idx // (h * w), br_idx // (h * w)
    tl_cell, br_cell = tl_idx % (h * w), br_idx % (h * w)
    tl_o, br_o = gather_at(tl_off.float(), tl_cell), gather_at(br_off.float(), br_cell)
    tl_e, br_e = gather_at(tl_emb.float(), tl_cell)[..., 0], gather_at(br_emb.float(), br_cell)[..., 0]
    tl_x, tl_y = (tl_cell % w).float() + tl_o[..., 0], (tl_cell // w).float() + tl_o[..., 1]
    br_x, br_y = (br_cell % w).float() + br_o[..., 0], (br_cell // w).float() + br_o[..., 1]

    # every pair's score and test on [B, k, k] broadcasts; boxes and scores are read for the n kept only
    scores = (tl_score[:, :, None] + br_score[:, None, :]) / 2
    rejected = (
        (tl_cls[:, :, None] != br_cls[:, None, :])
        | ((tl_e[:, :, None] - br_e[:, None, :]).abs() > ae_threshold)
        | (br_x[:, None, :] < tl_x[:, :, None])
        | (br_y[:, None, :] < tl_y[:, :, None])
    )
    scores = torch.where(rejected, torch.full_like(scores, -1.0), scores)

    n = min(num_dets, k * k)
    top, order = torch.topk(scores.view(b, -1), n)
    tl_i, br_i = order // k, order % k
    dets = torch.stack([tl_x.gather(1, tl_i), tl_y.gather(1, tl_i), br_x.gather(1, br_i), br_y.gather(1, br_i), top,
                        tl_score.gather(1, tl_i), br_score.gather(1, br_i), tl_cls.gather(1, tl_i).float()], dim=-1)
    if ct_heat is not None:
        dets = _centre_check(dets, ct_heat, ct_off, k=k, kernel=kernel, centre_n=centre_n)
    if n < num_dets:
        pad = torch.zeros(b, num_dets - n, 8, dtype=dets.dtype, device=dets.device)
        pad[..., 4] = -1
        dets = torch.cat([dets, pad], dim=1)
    return dets


def _centre_check(dets: torch.Tensor, ct_heat: torch.Tensor, ct_off: torch.Tensor | None, *, k: int, kernel: int,
                  centre_n: float) -> torch.Tensor:
    """Rescore decoded pairs [B, n, 8] by their centre keypoints (see `decode`, which checks the arguments and
    caps k); returns them re-sorted by score."""
    b, c, h, w = ct_heat.shape
    ct_score, ct_idx = topk_corners(ct_heat, k=k, kernel=kernel)
    ct_cls, ct_cell = ct_idx // (h * w), ct_idx % (h * w)
    if ct_off is not None:
        ct_o = gather_at(ct_off.float(), ct_cell)
    else:  # no offsets: the cell centre
        ct_o = torch.full((*ct_cell.shape, 2), 0.5, device=ct_cell.device)
    ct_x = ((ct_cell % w).float() + ct_o[..., 0])[:, None, :]  # [B, 1, kc]
    ct_y = ((ct_cell // w).float() + ct_o[..., 1])[:, None, :]
    x1, y1, x2, y2 = (dets[..., i : i + 1] for i in range(4))  # [B, n, 1]
    lo, hi = (centre_n - 1) / (2 * centre_n), (centre_n + 1) / (2 * centre_n)
    inside = ((ct_x >= x1 + lo * (x2 - x1)) & (ct_x <= x1 + hi * (x2 - x1))
              & (ct_y >= y1 + lo * (y2 - y1)) & (ct_y <= y1 + hi * (y2 - y1))
              & (ct_cls[:, None, :] == dets[..., 7:8].long()))
    best = torch.where(inside, ct_score[:, None, :], torch.full_like(inside, -1.0, dtype=ct_score.dtype)).amax(-1)
    keep = (dets[..., 4] >= 0) & (best >= 0)
    score = torch.where(keep, (dets[..., 5] + dets[..., 6] + best) / 3, torch.full_like(best, -1.0))
    dets = torch.cat([dets[..., :4], score.unsqueeze(-1), dets[..., 5:]], dim=-1)
    order = torch.argsort(score, dim=1, descending=True, stable=True)
    return dets.gather(1, order.unsqueeze(-1).expand_as(dets))
