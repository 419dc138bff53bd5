"""The CPU presets' detect-time changes of 2026-12-01, one at a time, side by side on the same images.

Variants, each adding one change to the one before (all without flip, amp auto, the trained test scale; the
images are read beforehand, nothing is drawn or written):

1. before: the checkpoint as `load_model` gives it (BatchNorm unfolded), the paper's padding
   ((h + 1) % 128 == 0), soft-NMS down to score 0.001;
2. + folded BatchNorm (`fold_batchnorm`, as `load_network` now does);
3. + tight padding (the next multiple of the network's `input_multiple`);
4. + soft-NMS discarding boxes under the output threshold (`detect.output_settings`, detect's 0.3).

The variants run alternately (`interleaved_ms`); the median of `repeats` passes over all images, divided by
the image count, is reported, and the stages of one extra pass per variant (`StageTimer`).

    python -m benchmarks.detect_speedups --checkpoint last.safetensors --images DIR [--num-images 20] \\
        [--threads 1,2] [--repeats 5] [--threshold 0.3]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch

from cornernet_cli.bench import interleaved_ms
from cornernet_cli.config import DecodeConfig
from cornernet_cli.data.image_io import IMAGE_SUFFIXES, read_image
from cornernet_cli.decoder import Decoder
from cornernet_cli.detect import output_settings
from cornernet_cli.engine.checkpoint import load_model, test_scales
from cornernet_cli.engine.inference import StageTimer, detect_images
from cornernet_cli.model.fold import fold_batchnorm

VARIANTS = ("before", "+ folded BN", "+ tight padding", "+ NMS to threshold")


def build_variants(checkpoint: Path, threshold: float) -> tuple[list[tuple[torch.nn.Module, Decoder]], tuple]:
    """(model, decoder) for each of VARIANTS, and the checkpoint's test scales."""
    model, meta = load_model(checkpoint)
    folded = copy.deepcopy(model)
    fold_batchnorm(folded)
    folded = folded.to(memory_format=torch.channels_last)
    paper = DecodeConfig(padding="paper")
    tight = DecodeConfig(padding="tight")
    to_threshold = output_settings(tight, threshold)
    configs = [(model, paper), (folded, paper), (folded, tight), (folded, to_threshold)]
    return [(m, Decoder.for_network(s, m.config)) for m, s in configs], test_scales(meta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--num-images", type=int, default=20)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threshold", type=float, default=0.3)
    args = ap.parse_args()
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[: args.num_images]
    images = [read_image(p) for p in files]
    variants, scales = build_variants(args.checkpoint, args.threshold)

    def run(model: torch.nn.Module, decoder: Decoder, timer: StageTimer | None = None) -> list[np.ndarray]:
        return [detect_images(model, [image], decoder=decoder, scales=scales, amp="auto", timer=timer)[0]
                for image in images]

    kept = [run(m, d) for m, d in variants]
    same = all(np.array_equal(a[a[:, 4] >= args.threshold], b[b[:, 4] >= args.threshold])
               for a, b in zip(kept[2], kept[3]))
    print(f"{len(images)} images, scale {list(scales)}; ms per image, median of {args.repeats}; detections >= "
          f"{args.threshold} with and without the NMS threshold identical: {same}")
    print("| threads | " + " | ".join(VARIANTS) + " |")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        ms = interleaved_ms([lambda m=m, d=d: run(m, d) for m, d in variants], args.repeats)
        print(f"| {threads} | " + " | ".join(f"{t / len(images):.1f}" for t in ms) + " |", flush=True)
        for name, (m, d) in zip(VARIANTS, variants):
            timer = StageTimer()
            run(m, d, timer)
            stages = ", ".join(f"{k} {v:.1f}" for k, v in timer.per_image_ms().items())
            print(f"    {name}: {stages}")


if __name__ == "__main__":
    main()
