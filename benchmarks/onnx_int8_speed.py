"""Per-image detect time of one model four ways, side by side: PyTorch fp32 (amp off), PyTorch amp auto (bf16
where the CPU has native bf16), onnxruntime on the float graph and on the int8 graph (`cornernet export --int8`).

Each variant is a `Detector` running `predict` (letterbox, network, decode, soft-NMS; the images are read
beforehand, nothing is drawn or written) over the same images with its defaults (the trained test scale), with
flip and without, at each thread count; the variants run alternately (`interleaved_ms`) and the median of
`repeats` passes over all images, divided by the image count, is reported.

    python -m benchmarks.onnx_int8_speed --checkpoint last.safetensors --float m.onnx --int8 m-int8.onnx \\
        --images DIR [--num-images 20] [--threads 1,2] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from cornernet_cli.api import Detector
from cornernet_cli.bench import interleaved_ms
from cornernet_cli.data.image_io import IMAGE_SUFFIXES, read_image

VARIANTS = ("pytorch fp32", "pytorch amp auto", "onnxruntime fp32", "onnxruntime int8")


def machine() -> dict:
    """CPU model name, the CPU flags that matter here (bf16, VNNI, AMX), load average and library versions."""
    import onnxruntime

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    return {"cpu": fields.get("Model name", platform.processor()).strip(), "cores": os.cpu_count(),
            "flags": [f for f in flags if f.startswith(("avx512_bf16", "avx512_vnni", "avx_vnni", "amx"))],
            "loadavg": os.getloadavg()[0], "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "date": time.strftime("%Y-%m-%d")}


def bench(*, checkpoint: Path, float_graph: Path, int8_graph: Path, images: list[Path], threads: list[int],
          repeats: int) -> list[dict]:
    """One row per (threads, flip): the per-image ms of each variant in VARIANTS."""
    arrays = [read_image(p) for p in images]
    rows = []
    for t in threads:
        torch.set_num_threads(t)  # ONNX sessions take torch's thread count when they open
        pt, ox, q = Detector(checkpoint), Detector(float_graph), Detector(int8_graph)
        for flip in (True, False):
            runs = [lambda d=d, a=a, f=flip: d.predict(arrays, flip=f, amp=a)
                    for d, a in ((pt, "off"), (pt, "auto"), (ox, "off"), (q, "off"))]
            ms = interleaved_ms(runs, repeats)
            rows.append({"threads": t, "flip": flip, **{v: m / len(arrays) for v, m in zip(VARIANTS, ms)},
                         "loadavg": os.getloadavg()[0]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--float", dest="float_graph", type=Path, required=True)
    ap.add_argument("--int8", dest="int8_graph", type=Path, required=True)
    ap.add_argument("--images", type=Path, required=True, help="folder of images (the first N in name order)")
    ap.add_argument("--num-images", type=int, default=20)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[: args.num_images]
    info = machine()
    rows = bench(checkpoint=args.checkpoint, float_graph=args.float_graph, int8_graph=args.int8_graph, images=files,
                 threads=[int(t) for t in args.threads.split(",")], repeats=args.repeats)
    print(f"{info}\n{len(files)} images; ms per image, median of {args.repeats}")
    print("| threads | flip | " + " | ".join(VARIANTS) + " | fp32 / int8 | load |")
    for r in rows:
        print(f"| {r['threads']} | {'on' if r['flip'] else 'off'} | " + " | ".join(f"{r[v]:.1f}" for v in VARIANTS)
              + f" | {r['pytorch fp32'] / r['onnxruntime int8']:.2f}x | {r['loadavg']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "images": [str(f) for f in files], "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
