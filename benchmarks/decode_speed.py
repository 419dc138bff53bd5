"""`decode` against a straightforward version of the original algorithm, side by side.

`decode_reference` is the original's recipe written plainly (sigmoid over the whole map, 3 x 3 max-pool NMS,
top k of the whole map, all k x k pairs), with the same contract as `cornernet_cli.decode.decode`. It is a
timing baseline only (with `topk_maxpool`, the original's corner selection, which decode's whole-map path
computes with a faster window maximum); the tests' expectation is tests/reference.py.

    python -m benchmarks.decode_speed [--inputs peaks|noise] [--size 128] [--width W] [--classes 80] [--k 100]
                                      [--batch 1] [--threads 2] [--repeats 30]

prints the median milliseconds of both (run alternately, so both see the same machine load), their ratio,
and whether their valid detections are the same.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from cornernet_cli.bench import interleaved_ms, synthetic_heads
from cornernet_cli.decode import decode


def topk_maxpool(heat: torch.Tensor, *, k: int, kernel: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """The original algorithm: sigmoid, max-pool NMS (non-maxima set to 0), top k of the whole map.

    heat: [B, C, h, w] logits. Returns scores [B, k] (probabilities) and flat indices [B, k] into C*h*w.
    """
    b = heat.shape[0]
    p = torch.sigmoid(heat.float())
    pad = (kernel - 1) // 2
    hmax = torch.nn.functional.max_pool2d(p, kernel, stride=1, padding=pad)
    p = p * (hmax == p).float()
    return torch.topk(p.view(b, -1), k)


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


def bench_decode(*, classes: int = 80, size: int = 128, width: int | None = None, k: int = 100, batch: int = 1,
                 threads: int = 2, repeats: int = 30, inputs: str = "peaks", seed: int = 0) -> dict:
    """Median milliseconds of `decode` and `decode_reference` on the same inputs, run alternately.

    Maps [batch, classes, size, width] (width None: size). inputs: "peaks" (synthetic_heads: smooth
    background + gaussian peaks) or "noise" (N(0, 1) logits). Returns dict(fast_ms, reference_ms, speedup,
    same_output, classes, size, width, k, batch, threads, inputs).
    """
    width = size if width is None else width
    if inputs not in ("peaks", "noise"):
        raise ValueError(f"inputs must be 'peaks' or 'noise', got {inputs!r}")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        heads = synthetic_heads(batch=batch, classes=classes, size=size, width=width, seed=seed)
        if inputs == "noise":
            g = torch.Generator().manual_seed(seed)
            heads = (torch.randn(heads[0].shape, generator=g), torch.randn(heads[1].shape, generator=g),
                     *heads[2:])
        fast, ref = interleaved_ms([lambda: decode(*heads, k=k), lambda: decode_reference(*heads, k=k)], repeats)
        same = same_detections(decode(*heads, k=k), decode_reference(*heads, k=k))
    finally:
        torch.set_num_threads(old_threads)
    return {"fast_ms": fast, "reference_ms": ref, "speedup": ref / fast, "same_output": same, "classes": classes,
            "size": size, "width": width, "k": k, "batch": batch, "threads": threads, "inputs": inputs}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", choices=("peaks", "noise"), default="peaks")
    parser.add_argument("--size", type=int, default=128, help="heatmap height (input / 4), and width unless --width")
    parser.add_argument("--width", type=int, default=None, help="heatmap width (default: --size)")
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30, help="median of this many runs of each")
    args = parser.parse_args(argv)
    r = bench_decode(classes=args.classes, size=args.size, width=args.width, k=args.k, batch=args.batch,
                     threads=args.threads, repeats=args.repeats, inputs=args.inputs)
    print(f"{r['inputs']}, {r['classes']} x {r['size']} x {r['width']} maps, k {r['k']}, batch {r['batch']}, "
          f"{r['threads']} threads, median of {args.repeats}")
    print(f"decode {r['fast_ms']:.2f} ms  reference {r['reference_ms']:.2f} ms  ratio {r['speedup']:.1f}x  "
          f"same output: {'yes' if r['same_output'] else 'NO'}")
    return r


if __name__ == "__main__":
    main()
