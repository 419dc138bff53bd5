"""`cornernet detect` end to end against Ultralytics YOLO predict on the same images and cores, alternating.

Each timed pass is a fresh worker process (`--runner`) that loads its model, warms up on the first two images,
then times one pass over all images end to end (read the file, prepare, network, decode / NMS, draw, write the
annotated image); the driver runs the variants in turn, `--repeats` times, and reports the median ms per image.
Variants: `cornernet detect` with the CLI's default flags (amp auto, the preset's flip, the trained test
scale), the same with `--flip`, with `--int8 GRAPH` also that graph (`cornernet export --int8`) with its
defaults, and YOLO `predict(save=True)` (imgsz 640, conf 0.25, its defaults).

YOLO runs in its own venv (ultralytics is not a dependency of this package; never import this module from the
tests): `python3 -m venv /work/venv-yolo && /work/venv-yolo/bin/pip install ultralytics`. Without network
access to its weight downloads, `--yolo yolo26n.yaml` builds the network with random weights: same network
time, but a different NMS load from trained weights.

    python -m benchmarks.yolo_side_by_side --checkpoint last.safetensors --images DIR --yolo-python \\
        /work/venv-yolo/bin/python [--yolo yolo26n.yaml] [--int8 int8.onnx] [--num-images 20] [--threads 1,2] \\
        [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
FLIP = {"cornernet": None, "cornernet-flip": True, "cornernet-int8": None}  # runner -> detect's flip


def _files(folder: Path, n: int) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)[:n]


def run_cornernet(checkpoint: str, files: list[Path], out: Path, *, flip: bool | None) -> float:
    """Seconds for `cornernet detect`'s library call (the CLI's defaults; flip None: the preset's) over `files`."""
    from cornernet_cli.detect import detect

    detect(files[:2], checkpoint=checkpoint, out=out / "warm", amp="auto", flip=flip, exist_ok=True)
    start = time.perf_counter()
    detect(files, checkpoint=checkpoint, out=out / "run", amp="auto", flip=flip, exist_ok=True)
    return time.perf_counter() - start


def run_yolo(model_name: str, files: list[Path], out: Path) -> float:
    """Seconds for Ultralytics `predict(save=True)` over `files` (needs ultralytics: run in its venv)."""
    from ultralytics import YOLO

    model = YOLO(model_name)
    model.predict([str(f) for f in files[:2]], save=True, project=str(out), name="warm", exist_ok=True,
                  verbose=False, device="cpu")
    start = time.perf_counter()
    model.predict([str(f) for f in files], save=True, project=str(out), name="run", exist_ok=True, verbose=False,
                  device="cpu")
    return time.perf_counter() - start


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads_one)
    files = _files(args.images, args.num_images)
    with tempfile.TemporaryDirectory() as tmp:
        if args.runner == "yolo":
            seconds = run_yolo(args.yolo, files, Path(tmp))
        else:
            model = args.int8 if args.runner == "cornernet-int8" else args.checkpoint
            seconds = run_cornernet(str(model), files, Path(tmp), flip=FLIP[args.runner])
    print(json.dumps({"ms_per_image": seconds * 1e3 / len(files), "torch": torch.__version__}))


def driver(args: argparse.Namespace) -> None:
    here = Path(__file__).resolve().parent.parent
    runners = {"cornernet detect": (sys.executable, "cornernet"),
               "cornernet detect --flip": (sys.executable, "cornernet-flip")}
    if args.int8 is not None:
        runners[f"cornernet detect --model {args.int8.name}"] = (sys.executable, "cornernet-int8")
    runners["yolo predict"] = (args.yolo_python, "yolo")
    variants = list(runners)
    print(f"{len(_files(args.images, args.num_images))} images; ms per image, median of {args.repeats} passes")
    print("| threads | " + " | ".join(variants) + " | load |")
    for threads in (int(t) for t in args.threads.split(",")):
        times: dict[str, list[float]] = {v: [] for v in variants}
        loads = []
        for _ in range(args.repeats):
            for name, (python, runner) in runners.items():
                env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(here)}
                cmd = [python, "-m", "benchmarks.yolo_side_by_side", "--runner", runner, "--threads-one",
                       str(threads), "--images", str(args.images), "--num-images", str(args.num_images),
                       "--checkpoint", str(args.checkpoint), "--yolo", args.yolo]
                cmd += ["--int8", str(args.int8)] if args.int8 is not None else []
                done = subprocess.run(cmd, env=env, cwd=here, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"{name} failed:\n{done.stderr[-2000:]}")
                times[name].append(json.loads(done.stdout.strip().splitlines()[-1])["ms_per_image"])
                loads.append(os.getloadavg()[0])
        print(f"| {threads} | " + " | ".join(f"{statistics.median(times[v]):.1f}" for v in variants)
              + f" | {min(loads):.1f}-{max(loads):.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--yolo", default="yolo26n.yaml", help="Ultralytics model: a .pt file or a .yaml (random weights)")
    ap.add_argument("--yolo-python", default="/work/venv-yolo/bin/python")
    ap.add_argument("--int8", type=Path, help="also time this graph from `cornernet export --int8`")
    ap.add_argument("--num-images", type=int, default=20)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runner", choices=(*FLIP, "yolo"), help=argparse.SUPPRESS)
    ap.add_argument("--threads-one", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    worker(args) if args.runner else driver(args)


if __name__ == "__main__":
    main()
