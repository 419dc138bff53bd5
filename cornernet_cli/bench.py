"""`cornernet bench` (run_bench: the whole model's figures) and the timing helpers it and benchmarks/ share:
synthetic head outputs, side-by-side medians, peak memory, the data pipeline's rate.

Plain versions of the fast paths, timed against them, live in benchmarks/ (decode_speed.py,
corner_pool_speed.py), outside the package.
"""

from __future__ import annotations

import datetime
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from rich.table import Table

from cornernet_cli.data.coco import CocoDetection
from cornernet_cli.data.loader import build_train_dataset, collate, output_size_for
from cornernet_cli.data.synthetic import generate_image, write_synthetic_dataset
from cornernet_cli.data.transforms import normalize
from cornernet_cli.decode import decode
from cornernet_cli.engine.device import resolve_device
from cornernet_cli.engine.inference import StageTimer, detect_images
from cornernet_cli.engine.precision import amp_dtype, autocast
from cornernet_cli.errors import CornerNetError
from cornernet_cli.losses import CornerNetLoss
from cornernet_cli.model import build_model
from cornernet_cli.postprocess import merge_detections
from cornernet_cli.targets import encode_targets


def synthetic_heads(*, batch: int = 1, classes: int = 80, size: int = 128, objects: int = 30,
                    seed: int = 0, width: int | None = None) -> tuple[torch.Tensor, ...]:
    """Head outputs shaped like a trained model's: a smooth low background plus gaussian peaks.

    size: the maps' height; width: their width (None: size, square). Returns tl_heat, br_heat
    [B, C, size, width] logits, tl_emb, br_emb [B, 1, ...], tl_off, br_off [B, 2, ...].
    """
    width = size if width is None else width
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(width).float(), indexing="ij")
    scale = torch.tensor([width - 1, size - 1]).float()

    def heat():
        base = torch.randn(batch, classes, size // 8, width // 8, generator=g)
        logits = torch.nn.functional.interpolate(base, size=(size, width), mode="bilinear", align_corners=False)
        logits = logits - 6 + 0.05 * torch.randn(batch, classes, size, width, generator=g)
        for bi in range(batch):
            for _ in range(objects):
                c = int(torch.randint(classes, (1,), generator=g))
                cx, cy = torch.rand(2, generator=g) * scale
                bump = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 4.0)
                logits[bi, c] = torch.maximum(logits[bi, c], -6 + 10 * bump * float(torch.rand(1, generator=g)))
        return logits

    emb = lambda: torch.randn(batch, 1, size, width, generator=g) * 2  # noqa: E731
    off = lambda: torch.rand(batch, 2, size, width, generator=g)  # noqa: E731
    return heat(), heat(), emb(), emb(), off(), off()


def interleaved_ms(fns, repeats: int) -> list[float]:
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


# ---- `cornernet bench`: the whole model ----------------------------------------------------------------

METRICS = ("forward_ms", "forward_flip_ms", "decode_ms", "soft_nms_ms", "detect_ms", "detect_noflip_ms",
           "train_images_per_s",
           "data_images_per_s", "peak_memory_mb")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, *, repeats: int, warmup: int = 1, device: torch.device = torch.device("cpu")) -> float:
    """Median wall-clock milliseconds of `fn()` over `repeats` runs after `warmup` runs (CUDA synchronised
    before starting and after each run, so queued kernels are counted)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: torch.cuda.max_memory_allocated since the last reset (tensors only, MiB). CPU: the process's
    resident-set high-water mark (resource.getrusage ru_maxrss, MiB; includes Python, torch and everything the
    process ever held, it never goes down)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def environment(device: torch.device) -> dict:
    """Where and when: date, host CPU count, torch / numpy / Python versions, threads, GPU name, load average."""
    env = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
           "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
           "torch": torch.__version__, "numpy": np.__version__, "loadavg": list(os.getloadavg())}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def _synthetic_batch(*, batch_size: int, input_size: int, num_classes: int, seed: int,
                     output_stride: int = 4) -> dict[str, torch.Tensor]:
    """A training batch (loader.collate format) of synthetic shape images at input_size with real targets at
    ceil(input_size / output_stride)."""
    rng = np.random.default_rng(seed)
    out_size = output_size_for(input_size, output_stride)
    samples = []
    for _ in range(batch_size):
        image, boxes, labels = generate_image(rng, image_size=input_size, num_classes=min(4, num_classes))
        t = encode_targets(boxes, labels, num_classes, (input_size, input_size), out_size)
        sample = {"image": normalize(image.astype(np.float32) / 255.0)}
        for key in ("tl_heat", "br_heat", "tl_off", "br_off"):
            sample[key] = torch.from_numpy(np.ascontiguousarray(t[key], dtype=np.float32))
        for key in ("tl_index", "br_index"):
            sample[key] = torch.from_numpy(np.ascontiguousarray(t[key], dtype=np.int64))
        samples.append(sample)
    return collate(samples)


def bench_data(*, data: str | None = None, split: str = "train", input_size: int = 511, samples: int = 16,
               seed: int = 0, output_stride: int = 4) -> tuple[float, str]:
    """Training samples per second of one worker (torch and OpenCV on one thread): decode, augmentation,
    targets (at ceil(input_size / output_stride)), as TrainDataset[i] does. data: a --data folder; None: 16
    synthetic 256 x 256 shape images (4 classes) written to a temporary folder. Returns (images/s, description
    of the data)."""


    old_threads, old_cv = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if data is None:
                write_synthetic_dataset(tmp, num_train=16, num_val=0, image_size=256, num_classes=4, seed=seed)
                data, split, what = tmp, "train", "synthetic shapes, 16 images 256 x 256, 4 classes"
            else:
                what = f"{data} ({split})"
            ds = build_train_dataset(CocoDetection.from_folder(data, split), input_size=input_size,
                                     output_stride=output_stride)
            count = [0]

            def one():
                ds.seed_sample(seed + count[0])
                ds[count[0] % len(ds)]
                count[0] += 1

            for _ in range(2):
                one()
            start = time.perf_counter()
            for _ in range(samples):
                one()
            return samples / (time.perf_counter() - start), what
    finally:
        torch.set_num_threads(old_threads)
        cv2.setNumThreads(old_cv)


@dataclass(frozen=True)
class _Timing:
    """How run_bench measures: the median of `repeats` runs after `warmup` on `device` (autocast to `dtype`,
    None: fp32); `loadavg` gets the 1-minute load average at the start of each phase."""

    device: torch.device
    dtype: torch.dtype | None
    repeats: int
    warmup: int
    loadavg: dict[str, float]

    def ms(self, fn, *, device: torch.device | None = None) -> float:
        """median_ms of `fn` (synchronising `device`, default the bench's)."""
        return median_ms(fn, repeats=self.repeats, warmup=self.warmup, device=device or self.device)

    def phase(self, name: str) -> None:
        self.loadavg[name] = os.getloadavg()[0]

    def autocast(self):
        return autocast(self.device, self.dtype)


def _forward_figures(net: torch.nn.Module, t: _Timing, *, batch_size: int, input_size: int,
                     fmt: torch.memory_format, seed: int) -> dict:
    """forward_ms / forward_flip_ms: per image, a batch [batch_size, 3, S, S] (and with its mirror, 2 x)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, input_size, input_size, generator=g).to(t.device).contiguous(memory_format=fmt)
    flipped = torch.cat([images, images.flip(-1)]).contiguous(memory_format=fmt)

    def forward(x):
        def run():
            with torch.inference_mode(), t.autocast():
                net(x)
        return run

    t.phase("forward")
    return {"forward_ms": t.ms(forward(images)) / batch_size, "forward_flip_ms": t.ms(forward(flipped)) / batch_size}


def _decode_figures(t: _Timing, *, num_classes: int, out: int, seed: int) -> dict:
    """decode_ms per image of a flip pair of synthetic heads [2, C, out, out]; soft_nms_ms of the pair's boxes."""
    heads = tuple(v.to(t.device) for v in synthetic_heads(batch=2, classes=num_classes, size=out, seed=seed))
    t.phase("decode")
    result = {"decode_ms": t.ms(lambda: decode(*heads)) / 2}
    # every same-class pair accepted (the synthetic embeddings are random): a full 2 x num_dets workload
    dets = decode(*heads, ae_threshold=float("inf")).cpu().numpy()
    pair = np.concatenate([d[d[:, 4] > -1] for d in dets])
    result["soft_nms_boxes"] = len(pair)
    t.phase("soft_nms")
    result["soft_nms_ms"] = t.ms(lambda: merge_detections(pair), device=torch.device("cpu"))
    return result


def _detect_figures(net: torch.nn.Module, t: _Timing, *, image_size: tuple[int, int], amp: str, seed: int) -> dict:
    """detect_ms (with flip; its stages in detect_stages_ms) and detect_noflip_ms of one synthetic image of
    image_size (h, w)."""
    dev = t.device
    h, w = image_size
    picture = generate_image(np.random.default_rng(seed), image_size=max(h, w))[0][:h, :w].copy()
    timer = StageTimer()
    t.phase("detect")

    def detect_once(flip: bool, timer: StageTimer):
        detect_images(net, [picture], device=dev, flip=flip, timer=timer, amp=amp)

    result = {"detect_ms": t.ms(lambda: detect_once(True, timer))}
    stages = timer.per_image_ms()  # means over warm-up and repeats
    result["detect_stages_ms"] = {k: v for k, v in stages.items() if k != "total"}
    result["detect_noflip_ms"] = t.ms(lambda: detect_once(False, StageTimer()))
    return result


def _train_figures(model: torch.nn.Module, net: torch.nn.Module, t: _Timing, *, batch_size: int, input_size: int,
                   num_classes: int, fmt: torch.memory_format, amp: str, seed: int) -> dict:
    """train_step_ms and train_images_per_s: an Adam step of CornerNetLoss on a synthetic batch
    [batch_size, 3, S, S] with its targets. Leaves `model` in eval mode."""
    dev = t.device
    batch = {k: v.to(dev) for k, v in _synthetic_batch(batch_size=batch_size, input_size=input_size,
                                                       num_classes=num_classes, seed=seed,
                                                       output_stride=model.output_stride).items()}
    batch["image"] = batch["image"].contiguous(memory_format=fmt)
    model.train()
    criterion = CornerNetLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp == "fp16")

    def step():
        with t.autocast():
            outputs = net(batch["image"])
        outputs = [o.map(torch.Tensor.float) for o in outputs]
        loss, _ = criterion(outputs, batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    t.phase("train")
    step_ms = t.ms(step)
    model.eval()
    return {"train_step_ms": step_ms, "train_images_per_s": 1e3 * batch_size / step_ms}


def run_bench(*, preset: str = "small", device: str = "cpu", input_size: int = 511, batch_size: int = 1,
              amp: str = "off", channels_last: bool | None = None, compile: bool = False, num_classes: int = 80,
              image_size: tuple[int, int] = (480, 640), repeats: int = 5, warmup: int = 1,
              threads: int | None = None, data: str | None = None, seed: int = 0) -> dict:
    """Measure one preset on one device; every time a median of `repeats` runs after `warmup`.

    - forward_ms: network forward (eval, inference_mode) per image, batch [batch_size, 3, S, S], S = input_size;
    - forward_flip_ms: the same with the mirrored copies in the batch (2 x batch_size), per image;
    - decode_ms: `decode` per image of head outputs at ceil(S / output stride) (synthetic peaks, num_classes),
      flip pair included (benchmarks/decode_speed.py times it against the original algorithm);
    - soft_nms_ms: `merge_detections` (gaussian soft-NMS, top 100) of one image's flip pair of decoded boxes
      (up to 2 x 1000; the count is soft_nms_boxes);
    - detect_ms: `detect_images` (letterbox, forward with flip, decode, soft-NMS) on one image_size (h, w)
      synthetic image, with the per-stage split in detect_stages_ms; detect_noflip_ms the same without flip;
    - train_images_per_s: Adam step of CornerNetLoss (all stacks) at batch_size x S x S, synthetic targets;
    - data_images_per_s: TrainDataset samples per second on one worker thread (see bench_data);
    - peak_memory_mb: see peak_memory_mb (CUDA: max of the inference and training phases, each reported too).
    amp: off | bf16 | fp16 (autocast; CUDA mainly; on the CPU only bf16 is allowed); channels_last: default True.
    Returns a JSON-ready dict with the settings, the environment and load averages per phase.
    """
    dev = resolve_device(device)
    if channels_last is None:
        channels_last = True
    dtype = amp_dtype(amp, dev)
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    result: dict = {"settings": {"preset": preset, "device": str(dev), "input_size": input_size,
                                 "batch_size": batch_size, "amp": amp, "channels_last": channels_last,
                                 "compile": compile, "num_classes": num_classes, "image_size": list(image_size),
                                 "repeats": repeats, "warmup": warmup},
                    "environment": environment(dev), "loadavg": {}}
    t = _Timing(device=dev, dtype=dtype, repeats=repeats, warmup=warmup, loadavg=result["loadavg"])
    try:
        try:
            model = build_model(preset, num_classes).to(dev, memory_format=fmt).eval()
        except ValueError as e:
            raise CornerNetError(str(e), 2) from None
        result["parameters"] = sum(p.numel() for p in model.parameters())
        net = torch.compile(model) if compile else model
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        result.update(_forward_figures(net, t, batch_size=batch_size, input_size=input_size, fmt=fmt, seed=seed))
        result.update(_decode_figures(t, num_classes=num_classes, out=-(-input_size // model.output_stride),
                                      seed=seed))
        result.update(_detect_figures(net, t, image_size=image_size, amp=amp, seed=seed))
        result["peak_memory_inference_mb"] = peak_memory_mb(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        result.update(_train_figures(model, net, t, batch_size=batch_size, input_size=input_size,
                                     num_classes=num_classes, fmt=fmt, amp=amp, seed=seed))
        result["peak_memory_train_mb"] = peak_memory_mb(dev)
        result["peak_memory_mb"] = max(result["peak_memory_inference_mb"], result["peak_memory_train_mb"])
        t.phase("data")
        result["data_images_per_s"], result["data"] = bench_data(data=data, input_size=input_size, seed=seed,
                                                                 output_stride=model.output_stride)
        t.phase("end")
    finally:
        torch.set_num_threads(old_threads)
    return result


def results_table(result: dict):
    """A rich table of run_bench's figures (one row per metric, with what it measures)."""
    s = result["settings"]
    title = (f"cornernet bench: {s['preset']} on {s['device']}, input {s['input_size']}, batch {s['batch_size']}, "
             f"amp {s['amp']}{', channels_last' if s['channels_last'] else ''}{', compiled' if s['compile'] else ''}")
    table = Table(title=title)
    for col in ("metric", "value", "what"):
        table.add_column(col, justify="right" if col == "value" else "left")
    h, w = s["image_size"]
    rows = [
        ("parameters", f"{result['parameters']:,}", ""),
        ("forward", f"{result['forward_ms']:.1f} ms/image", f"batch {s['batch_size']}"),
        ("forward + flip", f"{result['forward_flip_ms']:.1f} ms/image", f"batch {2 * s['batch_size']}"),
        ("decode", f"{result['decode_ms']:.2f} ms", "per image, synthetic heads at input / stride"),
        ("soft-NMS", f"{result['soft_nms_ms']:.2f} ms", f"{result['soft_nms_boxes']} boxes"),
        ("detect", f"{result['detect_ms']:.1f} ms/image", f"{w} x {h} image, flip; " + ", ".join(
            f"{k} {v:.0f}" for k, v in result["detect_stages_ms"].items())),
        ("detect, no flip", f"{result['detect_noflip_ms']:.1f} ms/image", f"{w} x {h} image"),
        ("training step", f"{result['train_images_per_s']:.2f} images/s", f"{result['train_step_ms']:.0f} ms/step"),
        ("data pipeline", f"{result['data_images_per_s']:.1f} images/s", "one worker; " + result["data"]),
        ("peak memory", f"{result['peak_memory_mb']:.0f} MiB",
         "max allocated (CUDA)" if s["device"].startswith("cuda") else "process RSS high-water mark"),
        ("load average", " / ".join(f"{v:.1f}" for v in result["loadavg"].values()),
         f"{result['environment']['cpu_count']} CPUs, {result['environment']['torch_threads']} torch threads"),
    ]
    for row in rows:
        table.add_row(*row)
    return table
