"""Independent references for the decoder (plain NumPy and Python loops over small maps) and for corner
pooling (the torch.cummax formulation).

Nothing here imports cornernet_cli: corner selection (sigmoid, window maximum, top k), pairing and scoring
are recomputed from the paper's description, so a test that compares the package's decode with these
checks it against something the package did not compute. Small maps only (loops over every cell).
"""

from __future__ import annotations

import numpy as np
import torch


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def local_maxima_topk(heat: np.ndarray, *, k: int, kernel: int = 3) -> list[tuple[float, int, int, int]]:
    """One image's heatmap [C, h, w] logits -> the k best (score, class, y, x), score descending.

    A cell is a candidate when its probability is >= every probability in its kernel x kernel window (the
    window cut at the map's edges): the paper's "3 x 3 max-pooling" NMS, written as a loop.
    """
    p = sigmoid(heat)
    c, h, w = p.shape
    half = kernel // 2
    found = []
    for ci in range(c):
        for y in range(h):
            for x in range(w):
                window = p[ci, max(0, y - half) : y + half + 1, max(0, x - half) : x + half + 1]
                if p[ci, y, x] >= window.max():
                    found.append((float(p[ci, y, x]), ci, y, x))
    found.sort(key=lambda t: -t[0])
    return found[:k]


def decode_reference(tl_heat, br_heat, tl_emb, br_emb, tl_off, br_off, *, k: int = 100, kernel: int = 3,
                     ae_threshold: float = 0.5) -> list[np.ndarray]:
    """Per image, every accepted (top-left, bottom-right) pair as rows x1, y1, x2, y2, score, tl_score,
    br_score, class (output-map coordinates), sorted by score descending. Arrays as in the package's decode
    ([B, C, h, w] heatmap logits, [B, 1, h, w] embeddings, [B, 2, h, w] offsets x, y), as NumPy or anything
    np.asarray reads. Rejected pairs are left out (the package marks them with score -1)."""
    tl_heat, br_heat, tl_emb, br_emb, tl_off, br_off = (np.asarray(a, dtype=np.float64) for a in
                                                        (tl_heat, br_heat, tl_emb, br_emb, tl_off, br_off))
    out = []
    for b in range(tl_heat.shape[0]):
        rows = []
        tls = local_maxima_topk(tl_heat[b], k=k, kernel=kernel)
        brs = local_maxima_topk(br_heat[b], k=k, kernel=kernel)
        for s1, c1, ty, tx in tls:
            x1, y1 = tx + tl_off[b, 0, ty, tx], ty + tl_off[b, 1, ty, tx]
            for s2, c2, by, bx in brs:
                x2, y2 = bx + br_off[b, 0, by, bx], by + br_off[b, 1, by, bx]
                if c1 != c2 or abs(tl_emb[b, 0, ty, tx] - br_emb[b, 0, by, bx]) > ae_threshold:
                    continue
                if x2 < x1 or y2 < y1:
                    continue
                rows.append([x1, y1, x2, y2, (s1 + s2) / 2, s1, s2, c1])
        rows.sort(key=lambda r: -r[4])
        out.append(np.array(rows, dtype=np.float64).reshape(-1, 8))
    return out


def centre_check_reference(dets: list[np.ndarray], ct_heat, ct_off, *, k: int, kernel: int = 3,
                           centre_n: float = 3.0) -> list[np.ndarray]:
    """The centre check of keypoint triplets, one box and one centre at a time: a pair (rows as returned by
    decode_reference) is kept when a centre keypoint of its class (top k local maxima of ct_heat, at cell +
    ct_off, or the cell's middle when ct_off is None) lies in the middle 1 / centre_n of the box, borders
    included; its score becomes the mean of its corner scores and the best such centre's score."""
    ct_heat = np.asarray(ct_heat, dtype=np.float64)
    lo, hi = (centre_n - 1) / (2 * centre_n), (centre_n + 1) / (2 * centre_n)
    out = []
    for b, rows in enumerate(dets):
        centres = []
        for s, c, y, x in local_maxima_topk(ct_heat[b], k=k, kernel=kernel):
            ox, oy = (0.5, 0.5) if ct_off is None else (float(ct_off[b, 0, y, x]), float(ct_off[b, 1, y, x]))
            centres.append((s, c, x + ox, y + oy))
        kept = []
        for x1, y1, x2, y2, _, s_tl, s_br, cls in rows.tolist():
            inside = [s for s, c, cx, cy in centres if c == int(cls)
                      and x1 + lo * (x2 - x1) <= cx <= x1 + hi * (x2 - x1)
                      and y1 + lo * (y2 - y1) <= cy <= y1 + hi * (y2 - y1)]
            if inside:
                kept.append([x1, y1, x2, y2, (s_tl + s_br + max(inside)) / 3, s_tl, s_br, cls])
        kept.sort(key=lambda r: -r[4])
        out.append(np.array(kept, dtype=np.float64).reshape(-1, 8))
    return out


def assert_same_rows(got, want: list[np.ndarray], *, atol: float = 1e-5) -> None:
    """The package's [B, N, 8] result (rows with score > -1) holds exactly the reference rows: the same
    multiset of rows (matched after a lexicographic sort) and the same descending score sequence.

    Where a map has fewer than k local maxima, the original algorithm (max-pool, non-maxima set to 0, top k)
    fills the remaining places with non-maxima of score 0, and which of those is arbitrary; rows with a
    corner score of exactly 0 are therefore left out of the comparison (the reference never makes them)."""
    got = np.asarray(got, dtype=np.float64)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g = g[(g[:, 4] > -1) & (g[:, 5] > 0) & (g[:, 6] > 0)]
        assert g.shape == w.shape, (g.shape, w.shape)
        np.testing.assert_allclose(g[:, 4], w[:, 4], atol=atol, rtol=0)  # the order by score
        key = lambda a: a[np.lexsort(np.round(a, 4).T[::-1])]  # noqa: E731
        np.testing.assert_allclose(key(g), key(w), atol=atol, rtol=0)


def corner_pool_cummax(x: torch.Tensor, direction: str) -> torch.Tensor:
    """Corner pooling as torch.cummax (flipped for top / left): the formulation `corner_pool` replaced on the
    CPU, the reference for its values and gradients (ties included) and the before of
    benchmarks/corner_pool_speed.py. `top`: out[..., i, j] = max over k >= i; `left`: over columns k >= j;
    `bottom`: k <= i; `right`: k <= j."""
    dim, toward_end = {"top": (-2, True), "left": (-1, True), "bottom": (-2, False), "right": (-1, False)}[direction]
    if toward_end:
        return torch.cummax(x.flip(dim), dim).values.flip(dim)
    return torch.cummax(x, dim).values
