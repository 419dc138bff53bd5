"""Decoder benchmark: `decode` against a straightforward version of the original algorithm.

`decode_reference` is the original's recipe written plainly (sigmoid over the whole map, 3 x 3 max-pool
NMS, top k of the whole map, all k x k pairs); it is also the independent expectation in the tests.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from cornernet_cli.decode import decode, topk_maxpool


@torch.no_grad()
def decode_reference(tl_heat, br_heat, tl_emb, br_emb, tl_off, br_off, *, k=100, kernel=3,
                     ae_threshold=0.5, num_dets=1000) -> torch.Tensor:
    """Same contract as `cornernet_cli.decode.decode` ([B, num_dets, 8]), computed the original way."""
    b, c, h, w = tl_heat.shape
    tl_s, tl_i = topk_maxpool(tl_heat, k=k, kernel=kernel)
    br_s, br_i = topk_maxpool(br_heat, k=k, kernel=kernel)

    def corner_data(index, emb, off):
        cls, cell = index // (h * w), index % (h * w)
        emb_flat = emb.float().reshape(b, -1)
        off_flat = off.float().reshape(b, 2, -1)
        e = torch.stack([emb_flat[i, cell[i]] for i in range(b)])
        ox = torch.stack([off_flat[i, 0, cell[i]] for i in range(b)])
        oy = torch.stack([off_flat[i, 1, cell[i]] for i in range(b)])
        return cls, (cell % w).float() + ox, (cell // w).float() + oy, e

    tl_c, tl_x, tl_y, tl_e = corner_data(tl_i, tl_emb, tl_off)
    br_c, br_x, br_y, br_e = corner_data(br_i, br_emb, br_off)
    tl_x, tl_y = tl_x.view(b, k, 1).expand(b, k, k), tl_y.view(b, k, 1).expand(b, k, k)
    br_x, br_y = br_x.view(b, 1, k).expand(b, k, k), br_y.view(b, 1, k).expand(b, k, k)
    bboxes = torch.stack((tl_x, tl_y, br_x, br_y), dim=3)
    tl_s, br_s = tl_s.view(b, k, 1).expand(b, k, k), br_s.view(b, 1, k).expand(b, k, k)
    scores = ((tl_s + br_s) / 2).clone()
    tl_c = tl_c.view(b, k, 1).expand(b, k, k)
    scores[tl_c != br_c.view(b, 1, k)] = -1
    scores[(tl_e.view(b, k, 1) - br_e.view(b, 1, k)).abs() > ae_threshold] = -1
    scores[br_x < tl_x] = -1
    scores[br_y < tl_y] = -1
    scores, inds = torch.topk(scores.view(b, -1), num_dets)
    pick = lambda t: torch.stack([t.reshape(b, -1)[i, inds[i]] for i in range(b)])  # noqa: E731
    boxes = torch.stack([bboxes.reshape(b, -1, 4)[i, inds[i]] for i in range(b)])
    return torch.cat([boxes, scores[..., None], pick(tl_s)[..., None], pick(br_s)[..., None],
                      pick(tl_c).float()[..., None]], dim=2)


def synthetic_heads(*, batch: int = 1, classes: int = 80, size: int = 128, objects: int = 30,
                    seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Head outputs shaped like a trained model's: a smooth low background plus gaussian peaks.

    Returns tl_heat, br_heat [B, C, size, size] logits, tl_emb, br_emb [B, 1, ...], tl_off, br_off [B, 2, ...].
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")

    def heat():
        base = torch.randn(batch, classes, size // 8, size // 8, generator=g)
        logits = torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
        logits = logits - 6 + 0.05 * torch.randn(batch, classes, size, size, generator=g)
        for bi in range(batch):
            for _ in range(objects):
                c = int(torch.randint(classes, (1,), generator=g))
                cx, cy = torch.rand(2, generator=g) * (size - 1)
                bump = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 4.0)
                logits[bi, c] = torch.maximum(logits[bi, c], -6 + 10 * bump * float(torch.rand(1, generator=g)))
        return logits

    emb = lambda: torch.randn(batch, 1, size, size, generator=g) * 2  # noqa: E731
    off = lambda: torch.rand(batch, 2, size, size, generator=g)  # noqa: E731
    return heat(), heat(), emb(), emb(), off(), off()


def _interleaved_ms(fns, repeats: int) -> list[float]:
    """Median milliseconds of each function, run alternately so both see the same machine load."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) * 1e3 for bucket in times]


def same_detections(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-6) -> bool:
    """Valid rows (score > -1) of two [B, N, 8] results are equal as sets (sorted lexicographically)."""
    for x, y in zip(a, b):
        x, y = x[x[:, 4] > -1].numpy(), y[y[:, 4] > -1].numpy()
        if x.shape != y.shape:
            return False
        x, y = x[np.lexsort(x.T[::-1])], y[np.lexsort(y.T[::-1])]
        if not np.allclose(x, y, atol=atol, rtol=0):
            return False
    return True


def bench_decode(*, classes: int = 80, size: int = 128, k: int = 100, batch: int = 1, threads: int = 2,
                 repeats: int = 20, inputs: str = "peaks", seed: int = 0) -> dict:
    """Median milliseconds of `decode` and `decode_reference` on the same inputs, side by side.

    inputs: "peaks" (synthetic_heads: smooth background + gaussian peaks) or "noise" (N(0, 1) logits).
    Returns dict(fast_ms, reference_ms, speedup, same_output, classes, size, k, batch, threads).
    """
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        heads = synthetic_heads(batch=batch, classes=classes, size=size, seed=seed)
        if inputs == "noise":
            g = torch.Generator().manual_seed(seed)
            heads = (torch.randn(heads[0].shape, generator=g), torch.randn(heads[1].shape, generator=g),
                     *heads[2:])
        elif inputs != "peaks":
            raise ValueError(f"inputs must be 'peaks' or 'noise', got {inputs!r}")
        fast, ref = _interleaved_ms([lambda: decode(*heads, k=k), lambda: decode_reference(*heads, k=k)],
                                    repeats)
        same = same_detections(decode(*heads, k=k), decode_reference(*heads, k=k))
    finally:
        torch.set_num_threads(old_threads)
    return {"fast_ms": fast, "reference_ms": ref, "speedup": ref / fast, "same_output": same,
            "classes": classes, "size": size, "k": k, "batch": batch, "threads": threads, "inputs": inputs}
