"""Decoding corner heatmaps into boxes (paper section 4.1, "Testing Details").

Sigmoid scores, local maxima in a kernel x kernel window (the paper's 3 x 3 max-pool NMS), the top k
corners of each type, every same-class (top-left, bottom-right) pair whose embeddings differ by at most
ae_threshold and whose box is not inverted, scored by the mean of its corner scores.

Speed: the original applies a sigmoid and a max-pool to the whole map. Sigmoid is monotonic, so the
strongest corners are found on the logits: the top rows by row maximum contain the top m cells, and
only those m candidates get their window checked (in sigmoid space, the original's exact test
`maxpool(p) == p`). If fewer than k candidates are local maxima, m grows; past a quarter of the map
the plain max-pool path runs instead. Same corners, a fraction of the work (see docs/performance.md).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from cornernet_cli.targets import gather_at


def topk_maxpool(heat: torch.Tensor, *, k: int, kernel: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """The original algorithm: sigmoid, max-pool NMS (non-maxima set to 0), top k of the whole map.

    heat: [B, C, h, w] logits. Returns scores [B, k] (probabilities) and flat indices [B, k] into C*h*w.
    """
    b = heat.shape[0]
    p = torch.sigmoid(heat.float())
    pad = (kernel - 1) // 2
    hmax = F.max_pool2d(p, kernel, stride=1, padding=pad)
    p = p * (hmax == p).float()
    return torch.topk(p.view(b, -1), k)


def _window_is_max(flat_logits: torch.Tensor, index: torch.Tensor, h: int, w: int, kernel: int) -> torch.Tensor:
    """For flat indices [B, m] into [B, C*h*w]: is each cell's sigmoid the max of its kernel window?"""
    row, x = index // w, index % w
    plane, y = row // h, row % h
    half = (kernel - 1) // 2
    offsets = torch.arange(-half, half + 1, device=index.device)
    ny = (y.unsqueeze(-1) + offsets).clamp(0, h - 1)  # clamped cells stay inside the window
    nx = (x.unsqueeze(-1) + offsets).clamp(0, w - 1)
    neigh = ((plane * h).unsqueeze(-1) + ny).unsqueeze(-1) * w + nx.unsqueeze(-2)  # [B, m, kk, kk]
    values = torch.sigmoid(flat_logits.gather(1, neigh.flatten(1))).view(*index.shape, -1)
    centre = torch.sigmoid(flat_logits.gather(1, index))
    return centre >= values.amax(dim=-1)


def topk_corners(heat: torch.Tensor, *, k: int, kernel: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k local maxima of sigmoid(heat): heat [B, C, h, w] logits -> (scores [B, k], flat index [B, k]).

    Scores are probabilities, sorted descending; the flat index runs over C*h*w (class = index // (h*w)).
    Same result as `topk_maxpool` (up to the order of exactly tied scores). kernel must be odd.
    """
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be a positive odd number, got {kernel}")
    b, c, h, w = heat.shape
    flat = heat.float().reshape(b, -1)
    k = min(k, flat.shape[1])
    if kernel == 1:
        values, index = torch.topk(flat, k)
        return torch.sigmoid(values), index
    rows = flat.detach().view(b, c * h, w)
    row_max = rows.amax(dim=-1)
    m = min(8 * k, c * h)
    while True:
        # The top m cells lie in the m rows with the largest maxima.
        _, top_rows = torch.topk(row_max, m)
        cand = rows.gather(1, top_rows.unsqueeze(-1).expand(b, m, w)).reshape(b, -1)
        values, pos = torch.topk(cand, m)
        index = top_rows.gather(1, pos // w) * w + pos % w
        is_max = _window_is_max(flat, index, h, w, kernel)
        if bool((is_max.sum(dim=1) >= k).all()):
            masked = torch.where(is_max, values, torch.full_like(values, float("-inf")))
            _, order = torch.topk(masked, k)
            return torch.sigmoid(values.gather(1, order)), index.gather(1, order)
        if 16 * m > c * h:  # the next round would read more than a quarter of the map
            break
        m *= 4
    return topk_maxpool(heat, k=k, kernel=kernel)


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

    shape = (b, k, k)
    boxes = torch.stack(
        [tl_x[:, :, None].expand(shape), tl_y[:, :, None].expand(shape),
         br_x[:, None, :].expand(shape), br_y[:, None, :].expand(shape)], dim=-1)
    tl_s, br_s = tl_score[:, :, None].expand(shape), br_score[:, None, :].expand(shape)
    scores = (tl_s + br_s) / 2
    rejected = (
        (tl_cls[:, :, None] != br_cls[:, None, :])
        | ((tl_e[:, :, None] - br_e[:, None, :]).abs() > ae_threshold)
        | (boxes[..., 2] < boxes[..., 0])
        | (boxes[..., 3] < boxes[..., 1])
    )
    scores = torch.where(rejected, torch.full_like(scores, -1.0), scores)

    n = min(num_dets, k * k)
    top, order = torch.topk(scores.view(b, -1), n)
    cls = tl_cls[:, :, None].expand(shape).reshape(b, -1).gather(1, order).float()
    dets = torch.cat([
        boxes.reshape(b, -1, 4).gather(1, order.unsqueeze(-1).expand(b, n, 4)),
        top.unsqueeze(-1),
        tl_s.reshape(b, -1).gather(1, order).unsqueeze(-1),
        br_s.reshape(b, -1).gather(1, order).unsqueeze(-1),
        cls.unsqueeze(-1),
    ], dim=-1)
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
