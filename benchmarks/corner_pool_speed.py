"""CPU corner pooling against the torch.cummax formulation it replaced, side by side.

Forward + backward of the four directions, interleaved in one process, for `corner_pool` (now),
`corner_pool_cummax` (before; tests/reference.py, also the tests' reference for values and gradients) and the
bar "one cummax over the tensor plus its flip".

    python -m benchmarks.corner_pool_speed [--shape 4,128,64,64] [--repeats 9] [--threads N]
"""

from __future__ import annotations

import argparse
import os

import torch

from cornernet_cli.bench import interleaved_ms
from cornernet_cli.model.corner_pool import DIRECTIONS, corner_pool
from tests.reference import corner_pool_cummax


def bench_corner_pool(*, shape: tuple[int, ...] = (4, 128, 64, 64), repeats: int = 9, threads: int | None = None,
                      seed: int = 0) -> dict:
    """Returns {"shape", "threads", "now_ms", "cummax_ms", "bar_ms" (each summed over the 4 directions, forward +
    backward with a ones gradient), "forward_now_ms", "forward_cummax_ms", "speedup", "loadavg"}."""
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        x0 = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        grad = torch.ones_like(x0)

        def fwd_bwd(pool):
            def run():
                for d in DIRECTIONS:
                    x = x0.detach().requires_grad_(True)
                    pool(x, d).backward(grad)
            return run

        def fwd(pool):
            def run():
                with torch.no_grad():
                    for d in DIRECTIONS:
                        pool(x0, d)
            return run

        def bar(x, d):  # one cummax over the tensor plus its flip
            dim = -2 if d in ("top", "bottom") else -1
            return torch.cummax(x.flip(dim), dim).values

        load = os.getloadavg()[0]
        now, before, bar_ms, f_now, f_before = interleaved_ms(
            [fwd_bwd(corner_pool), fwd_bwd(corner_pool_cummax), fwd_bwd(bar), fwd(corner_pool),
             fwd(corner_pool_cummax)], repeats)
    finally:
        torch.set_num_threads(old_threads)
    return {"shape": list(shape), "threads": threads if threads else torch.get_num_threads(), "now_ms": now,
            "cummax_ms": before, "bar_ms": bar_ms, "forward_now_ms": f_now, "forward_cummax_ms": f_before,
            "speedup": before / now, "loadavg": [load, os.getloadavg()[0]]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="4,128,64,64", help="B,C,H,W of the pooled tensor")
    parser.add_argument("--repeats", type=int, default=9, help="median of this many runs of each")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    r = bench_corner_pool(shape=tuple(int(v) for v in args.shape.split(",")), repeats=args.repeats,
                          threads=args.threads)
    print(f"shape {r['shape']}, {r['threads']} threads, median of {args.repeats}, load {r['loadavg']}")
    print(f"forward + backward: now {r['now_ms']:.1f} ms  cummax {r['cummax_ms']:.1f} ms  bar {r['bar_ms']:.1f} ms  "
          f"ratio {r['speedup']:.2f}x")
    print(f"forward: now {r['forward_now_ms']:.1f} ms  cummax {r['forward_cummax_ms']:.1f} ms")
    return r


if __name__ == "__main__":
    main()
