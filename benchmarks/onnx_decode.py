"""Decoding inside the ONNX graph or outside it: the decode as its own graph in onnxruntime against
`cornernet_cli.decode.decode` in PyTorch, and one graph (network + decode) against the network graph followed by
the PyTorch decode.

`decode`'s fast path does not export faithfully: its data-dependent `while` loop and `bool(...)` checks are
traced as the one branch the example input took (`traced_fast_path_check` shows the traced graph giving other
boxes on heads that need the fallback). What a graph has to contain is the straightforward algorithm, which
`DecodeGraph` is: sigmoid, kernel x kernel max-pool NMS, TopK of the whole map, gathers, all k x k pairs, TopK; with a
centre head also the centre check (TopK of the centre map, a [num_dets, k] inside test, ReduceMax, a sort by
TopK). k, num_dets, kernel, ae_threshold and centre_n are baked in; batch, classes, height and width are free.

1. Decode alone, alternating, median ms: (a) `decode` (PyTorch, the fast path), (b) the `DecodeGraph` graph in
   onnxruntime (intra-op threads = torch threads), (c) `DecodeGraph` in PyTorch (the same plain algorithm, to
   tell the algorithm's cost from the runtime's). Heads: the trained checkpoint's real heads on BCCD-sized
   images (its test scale and padding: 3 x 64 x 80 maps for 640 x 480 at 0.5), batch 1 and 2 (flip), and
   synthetic COCO-like ones (`synthetic_heads`, 80 x 128 x 128). `same` says whether (a) and (b) give the same
   valid detections (score > -1) within float tolerance.
2. The whole path, one image at a time, one thread: letterbox, network graph (`cornernet export --dynamic`),
   `decode` in PyTorch, to image pixels, soft-NMS; against one graph holding the network and `DecodeGraph`
   (the rest the same). ms per image, and with --data the COCO AP of both on a split and whether every
   image's final detections are identical.

    python -m benchmarks.onnx_decode --checkpoint last.safetensors --images DIR [--data DATA_DIR --split test] \\
        [--num-images 20] [--threads 1,2] [--repeats 30] [--path-repeats 3] [--max-size 1024] [--k 100] \\
        [--num-dets 1000] [--skip-paths] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from benchmarks.decode_speed import same_detections, topk_maxpool
from benchmarks.onnx_int8_speed import machine
from cornernet_cli.bench import interleaved_ms, synthetic_heads
from cornernet_cli.config import DecodeConfig
from cornernet_cli.data.coco import CocoDetection
from cornernet_cli.data.image_io import IMAGE_SUFFIXES, read_image
from cornernet_cli.decode import decode
from cornernet_cli.decoder import Decoder
from cornernet_cli.engine.checkpoint import load_model, test_scales
from cornernet_cli.engine.coco_metrics import coco_metrics
from cornernet_cli.engine.evaluate import class_mapping
from cornernet_cli.engine.inference import letterbox_batch, network_heads
from cornernet_cli.engine.onnx_runner import load_network
from cornernet_cli.export import _LastStackHeads, export_onnx
from cornernet_cli.model import set_export_mode
from cornernet_cli.model.cornernet import CENTRE_NAMES, OUTPUT_NAMES
from cornernet_cli.postprocess import detections_to_image, to_coco_results
from cornernet_cli.targets import gather_at

Heads = tuple[torch.Tensor, ...]


# ---- the decode as a graph ---------------------------------------------------------------------------------

def _corners(heat: torch.Tensor, emb: torch.Tensor, off: torch.Tensor, *, k: int, kernel: int
             ) -> tuple[torch.Tensor, ...]:
    """Top k corners of one type: heat [B, C, h, w] logits, emb [B, 1, h, w], off [B, 2, h, w] ->
    score, class (int64), x, y (cell + offset, output-map units), embedding, each [B, k]."""
    h, w = heat.shape[2], heat.shape[3]
    score, index = topk_maxpool(heat, k=k, kernel=kernel)
    cls, cell = index // (h * w), index % (h * w)
    o = gather_at(off, cell)
    x = (cell % w).to(torch.float32) + o[..., 0]
    y = (cell // w).to(torch.float32) + o[..., 1]
    return score, cls, x, y, gather_at(emb, cell)[..., 0]


class DecodeGraph(nn.Module):
    """`decode` as a graph can hold it: forward(tl_heat, br_heat, tl_emb, br_emb, tl_off, br_off[, ct_heat,
    ct_off]) -> [B, num_dets, 8] float32 (x1, y1, x2, y2 output-map units, score, tl_score, br_score, class),
    `decode`'s contract, computed the plain way (full-map sigmoid and max-pool). Keyword arguments as `decode`'s;
    centre: whether forward takes the centre heads. Needs C * h * w >= k and num_dets <= k * k (no padding
    rows: the sizes are fixed here, not capped)."""

    def __init__(self, *, k: int = 100, num_dets: int = 1000, kernel: int = 3, ae_threshold: float = 0.5,
                 centre: bool = False, centre_n: float = 3.0):
        super().__init__()
        if num_dets > k * k:
            raise ValueError(f"num_dets {num_dets} > k * k = {k * k}")
        self.k, self.num_dets, self.kernel, self.ae_threshold = k, num_dets, kernel, ae_threshold
        self.centre, self.centre_n = centre, centre_n

    def forward(self, *heads: torch.Tensor) -> torch.Tensor:
        tl_heat, br_heat, tl_emb, br_emb, tl_off, br_off = heads[:6]
        tl_s, tl_c, tl_x, tl_y, tl_e = _corners(tl_heat, tl_emb, tl_off, k=self.k, kernel=self.kernel)
        br_s, br_c, br_x, br_y, br_e = _corners(br_heat, br_emb, br_off, k=self.k, kernel=self.kernel)
        scores = (tl_s[:, :, None] + br_s[:, None, :]) / 2  # [B, k, k]: row = top-left, column = bottom-right
        rejected = ((tl_c[:, :, None] != br_c[:, None, :])
                    | ((tl_e[:, :, None] - br_e[:, None, :]).abs() > self.ae_threshold)
                    | (br_x[:, None, :] < tl_x[:, :, None]) | (br_y[:, None, :] < tl_y[:, :, None]))
        scores = torch.where(rejected, torch.full_like(scores, -1.0), scores)
        top, order = torch.topk(scores.flatten(1), self.num_dets)
        i, j = order // self.k, order % self.k  # gather per corner ([B, n]) instead of expanding k x k columns
        dets = torch.stack([tl_x.gather(1, i), tl_y.gather(1, i), br_x.gather(1, j), br_y.gather(1, j), top,
                            tl_s.gather(1, i), br_s.gather(1, j), tl_c.gather(1, i).to(torch.float32)], dim=-1)
        if self.centre:
            dets = self._centre_check(dets, tl_c.gather(1, i), heads[6], heads[7])
        return dets

    def _centre_check(self, dets: torch.Tensor, cls: torch.Tensor, ct_heat: torch.Tensor, ct_off: torch.Tensor
                      ) -> torch.Tensor:
        """`decode`'s centre check on dets [B, n, 8] with their classes [B, n] int64; re-sorted by TopK (ties
        keep the lower index first in onnxruntime, as the stable argsort of `decode` does)."""
        h, w = ct_heat.shape[2], ct_heat.shape[3]
        ct_s, ct_i = topk_maxpool(ct_heat, k=self.k, kernel=self.kernel)
        ct_cell = ct_i % (h * w)
        o = gather_at(ct_off, ct_cell)
        ct_x = ((ct_cell % w).to(torch.float32) + o[..., 0])[:, None, :]  # [B, 1, k]
        ct_y = ((ct_cell // w).to(torch.float32) + o[..., 1])[:, None, :]
        x1, y1, x2, y2 = (dets[..., c : c + 1] for c in range(4))  # [B, n, 1]
        lo, hi = (self.centre_n - 1) / (2 * self.centre_n), (self.centre_n + 1) / (2 * self.centre_n)
        inside = ((ct_x >= x1 + lo * (x2 - x1)) & (ct_x <= x1 + hi * (x2 - x1))
                  & (ct_y >= y1 + lo * (y2 - y1)) & (ct_y <= y1 + hi * (y2 - y1))
                  & ((ct_i // (h * w))[:, None, :] == cls[:, :, None]))
        best = torch.where(inside, ct_s[:, None, :], torch.full_like(inside, -1.0, dtype=ct_s.dtype)).amax(-1)
        keep = (dets[..., 4] >= 0) & (best >= 0)
        score = torch.where(keep, (dets[..., 5] + dets[..., 6] + best) / 3, torch.full_like(best, -1.0))
        _, order = torch.topk(score, self.num_dets)
        dets = torch.cat([dets[..., :4], score.unsqueeze(-1), dets[..., 5:]], dim=-1)
        return dets.gather(1, order.unsqueeze(-1).expand(-1, -1, 8))


def head_names(centre: bool) -> tuple[str, ...]:
    return OUTPUT_NAMES + (CENTRE_NAMES if centre else ())


def export_graph(module: nn.Module, example: Heads | torch.Tensor, path: Path, *, inputs: Sequence[str],
                 axes: dict[str, dict[int, str]], opset: int = 17) -> Path:
    """`module` traced on `example` to the ONNX file `path` (TorchScript exporter, as `cornernet export`; the
    dynamo exporter needs onnxscript) with output "dets"; axes: the dynamic axes of each input."""
    example = example if isinstance(example, tuple) else (example,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module.eval(), example, str(path), dynamo=False, input_names=list(inputs),
                          output_names=["dets"], dynamic_axes={**axes, "dets": {0: "batch"}}, opset_version=opset)
    return path


def export_decode(path: Path, example: Heads, **settings) -> Path:
    """A `DecodeGraph(**settings)` graph with inputs named as `cornernet export`'s outputs; batch, classes, height
    and width dynamic. example: its heads (6, or 8 with settings centre=True)."""
    names = head_names(settings.get("centre", False))
    axes = {n: {0: "batch", 1: "classes", 2: "height", 3: "width"} if n.endswith("heat")
            else {0: "batch", 2: "height", 3: "width"} for n in names}
    return export_graph(DecodeGraph(**settings), example, path, inputs=names, axes=axes)


def session(path: Path, threads: int) -> ort.InferenceSession:
    """A CPU onnxruntime session with `threads` intra-op threads (as `OnnxNetwork` opens one)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_graph(sess: ort.InferenceSession, heads: Heads) -> torch.Tensor:
    """The session's "dets" [B, num_dets, 8] for heads fed by name in OUTPUT_NAMES (+ CENTRE_NAMES) order."""
    feed = {n: t.numpy() for n, t in zip(head_names(len(heads) == 8), heads)}
    return torch.from_numpy(sess.run(None, feed)[0])


# ---- 1. decode alone ---------------------------------------------------------------------------------------

def real_heads(checkpoint: Path, images: Sequence[np.ndarray], *, flip: bool) -> Heads:
    """The checkpoint's eight heads (float32, eval mode, fp32) for `images` letterboxed as detect does (its
    test scale and preset padding), with their mirrored copies when flip: [B or 2B, C, h, w] each."""
    model, meta = load_network(checkpoint)
    decoder = Decoder.for_network(DecodeConfig(), model.config)
    batch, _ = letterbox_batch(images, scale=test_scales(meta)[0], flip=flip, stride=model.output_stride,
                               max_side=decoder.settings.max_side, padding=decoder.padding)
    return network_heads(model, batch, device=torch.device("cpu")).heads()


def coco_like_heads(batch: int) -> Heads:
    """Synthetic 80 x 128 x 128 heads (`synthetic_heads`) plus a centre heatmap and offsets from another seed.
    The embeddings are N(0, 0.1) instead of N(0, 2), so that most same-class pairs group (as a trained model's
    do) and the agreement check has rows to compare; the work is the same."""
    g = torch.Generator().manual_seed(2)
    tl_heat, br_heat, _, _, tl_off, br_off = synthetic_heads(batch=batch, classes=80, size=128, seed=0)
    other = synthetic_heads(batch=batch, classes=80, size=128, seed=1)
    tl_emb, br_emb = (0.1 * torch.randn(batch, 1, 128, 128, generator=g) for _ in range(2))
    return tl_heat, br_heat, tl_emb, br_emb, tl_off, br_off, other[0], other[4]


def blob_heads(example: Heads, *, seed: int = 0) -> Heads:
    """Heads of `example`'s shape whose heatmaps are low noise (many distinct local maxima) under one broad
    smooth blob per class plane: the strongest cells all lie on the blobs, which hold one maximum each, so
    `decode`'s first round finds fewer than k maxima and takes the full max-pool. Embeddings and offsets are
    `example`'s."""
    g = torch.Generator().manual_seed(seed)
    b, c, h, w = example[0].shape
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")

    def heat() -> torch.Tensor:
        cy, cx = torch.rand(b, c, 1, 1, generator=g) * h, torch.rand(b, c, 1, 1, generator=g) * w
        blob = 5 - ((yy - cy) ** 2 + (xx - cx) ** 2) / 20
        return torch.maximum(blob, -8 + 0.5 * torch.randn(b, c, h, w, generator=g))

    return (heat(), heat(), *example[2:6])


def traced_fast_path_check(example: Heads, path: Path, *, k: int, num_dets: int, plain: ort.InferenceSession
                           ) -> dict:
    """Export `decode` itself (its fast path) by tracing it on noise heatmaps of `example`'s shape (N(0, 1)
    logits: the first round finds k maxima) and compare the graph with `decode` on the real `example` (six
    heads) and on `blob_heads` (where `decode` takes its full max-pool fallback; the trace replays the first
    round's masked TopK). `plain`: a session of the six-head `DecodeGraph`, checked on the same inputs. Returns
    {same_on_real, same_on_blobs, graph_same_on_real, graph_same_on_blobs, blob_rows}."""
    class FastPath(nn.Module):
        def forward(self, *heads: torch.Tensor) -> torch.Tensor:
            return decode(*heads, k=k, num_dets=num_dets)

    g = torch.Generator().manual_seed(0)
    noise = (torch.randn(example[0].shape, generator=g), torch.randn(example[1].shape, generator=g), *example[2:6])
    export_graph(FastPath(), noise, path, inputs=head_names(False), axes={})
    traced, out = session(path, 1), {}
    for name, heads in (("real", example[:6]), ("blobs", blob_heads(example))):
        want = decode(*heads, k=k, num_dets=num_dets)
        out[f"same_on_{name}"] = same_detections(run_graph(traced, heads), want, atol=1e-4)
        out[f"graph_same_on_{name}"] = same_detections(run_graph(plain, heads), want, atol=1e-4)
        out[f"{name}_rows"] = int((want[..., 4] > -1).sum())
    return out


def bench_decode(cases: dict[str, Heads], *, graphs: dict[bool, Path], threads: Sequence[int], repeats: int,
                 k: int, num_dets: int) -> list[dict]:
    """One row per (case, centre on / off, threads): median ms of `decode`, the graph in onnxruntime and
    `DecodeGraph` in PyTorch, alternating; `same`: decode's and the graph's valid detections agree."""
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        sessions = {centre: session(p, t) for centre, p in graphs.items()}
        for name, heads in cases.items():
            for centre, sess in sessions.items():
                h = heads if centre else heads[:6]
                plain = DecodeGraph(k=k, num_dets=num_dets, centre=centre)
                runs = [lambda h=h: decode(*h, k=k, num_dets=num_dets), lambda h=h, s=sess: run_graph(s, h),
                        lambda h=h, m=plain: m(*h)]
                with torch.inference_mode():
                    ms = interleaved_ms(runs, repeats)
                    same = same_detections(decode(*h, k=k, num_dets=num_dets), run_graph(sess, h), atol=1e-4)
                    valid = int((decode(*h, k=k, num_dets=num_dets)[..., 4] > -1).sum())
                rows.append({"case": name, "shape": list(h[0].shape), "centre": centre, "threads": t,
                             "decode_ms": ms[0], "graph_ort_ms": ms[1], "graph_torch_ms": ms[2], "same": same,
                             "valid": valid, "loadavg": os.getloadavg()[0]})
                print(_decode_row(rows[-1]), flush=True)
    return rows


def _decode_row(r: dict) -> str:
    shape = "x".join(str(s) for s in r["shape"])
    return (f"| {r['case']} | {shape} | {'yes' if r['centre'] else 'no'} | {r['threads']} | {r['decode_ms']:.2f} | "
            f"{r['graph_ort_ms']:.2f} | {r['graph_torch_ms']:.2f} | {r['graph_ort_ms'] / r['decode_ms']:.2f}x | "
            f"{'yes' if r['same'] else 'NO'} | {r['valid']} | {r['loadavg']:.1f} |")


# ---- 2. the whole path -------------------------------------------------------------------------------------

def export_full(checkpoint: Path, path: Path, *, max_size: int, example_size: tuple[int, int], **settings) -> Path:
    """One graph: images [B, 3, H, W] -> the network's last-stack heads -> `DecodeGraph(**settings)` ->
    "dets" [B, num_dets, 8]; corner pooling sized for `max_size` pixels as `cornernet export --dynamic`."""
    model, meta = load_model(checkpoint)
    set_export_mode(model, True, max_len=math.ceil(max_size / model.output_stride))
    settings = {**settings, "centre": meta["model_config"].centre_head}
    full = nn.Sequential(_LastStackHeads(model), _Splat(DecodeGraph(**settings))).eval()
    example = torch.randn(1, 3, *example_size, generator=torch.Generator().manual_seed(0))
    return export_graph(full, example, path, inputs=["images"], axes={"images": {0: "batch", 2: "height",
                                                                                 3: "width"}})


class _Splat(nn.Module):
    """Calls the wrapped module with the tuple it receives spread into arguments (for nn.Sequential)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, heads: Heads) -> torch.Tensor:
        return self.inner(*heads)


def path_detections(dets_of: Callable[[torch.Tensor], torch.Tensor], image: np.ndarray, *, decoder: Decoder,
                    scale: float, flip: bool, stride: int = 4) -> np.ndarray:
    """One BGR image through letterbox (for a network of output stride `stride`) -> dets_of(batch) ([B, num_dets,
    8]) -> image pixels (mirrored half flipped back) -> soft-NMS: [K, 6] as `detect_images` returns (x1, y1, x2,
    y2 pixels, score, class)."""
    batch, (box,) = letterbox_batch([image], scale=scale, flip=flip, stride=stride,
                                    max_side=decoder.settings.max_side, padding=decoder.padding)
    dets = dets_of(batch).numpy()
    parts = [detections_to_image(dets[0], box)] + ([detections_to_image(dets[1], box, mirrored=True)] if flip else [])
    return decoder.merge(parts)


def bench_paths(checkpoint: Path, images: list[np.ndarray], *, workdir: Path, max_size: int, repeats: int,
                k: int, num_dets: int, data: Path | None, split: str) -> list[dict]:
    """One row per flip setting: ms per image (one thread, alternating passes over `images`) of the network
    graph + PyTorch decode and of the one graph; with `data`, AP of both on its `split` and whether all final
    detections match."""
    torch.set_num_threads(1)
    net_path = export_onnx(checkpoint, workdir / "network.onnx", dynamic=True, height=256, width=320,
                           max_size=max_size).out
    full_path = export_full(checkpoint, workdir / "full.onnx", max_size=max_size, example_size=(256, 320), k=k,
                            num_dets=num_dets)
    network, meta = load_network(net_path)  # OnnxNetwork, one intra-op thread (torch's count)
    full = session(full_path, 1)
    decoder = Decoder.for_network(DecodeConfig(k=k, num_dets=num_dets), meta["model_config"])
    scale, stride = test_scales(meta)[0], network.output_stride

    def outside(batch: torch.Tensor) -> torch.Tensor:
        return decoder.decode(network(batch)[0])

    def inside(batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(full.run(None, {"images": batch.numpy()})[0])

    rows = []
    for flip in (False, True):
        passes = [lambda f=fn, fl=flip: [path_detections(f, im, decoder=decoder, scale=scale, flip=fl, stride=stride)
                                         for im in images] for fn in (outside, inside)]
        ms = interleaved_ms(passes, repeats)
        row = {"flip": flip, "outside_ms": ms[0] / len(images), "inside_ms": ms[1] / len(images),
               "images": len(images), "loadavg": os.getloadavg()[0]}
        if data is not None:
            row.update(compare_ap(outside, inside, data=data, split=split, meta=meta, decoder=decoder, scale=scale,
                                  flip=flip, stride=stride))
        rows.append(row)
        print(row, flush=True)
    return rows


def compare_ap(*paths: Callable[[torch.Tensor], torch.Tensor], data: Path, split: str, meta: dict,
               decoder: Decoder, scale: float, flip: bool, stride: int) -> dict:
    """COCO AP / AP50 of each path on `split` of `data` and whether every image's detections agree (same count,
    boxes and scores within 1e-4)."""
    dataset = CocoDetection.from_folder(data, split)
    ids = class_mapping(meta["class_names"], dataset)
    results: list[list[dict]] = [[] for _ in paths]
    identical = True
    for index, image_id in enumerate(dataset.image_ids):
        image = read_image(dataset.image_path(index))
        dets = [path_detections(p, image, decoder=decoder, scale=scale, flip=flip, stride=stride) for p in paths]
        identical &= all(d.shape == dets[0].shape and np.allclose(d, dets[0], atol=1e-4, rtol=0) for d in dets)
        for out, d in zip(results, dets):
            out.extend(to_coco_results(d, image_id, ids))
    metrics = [coco_metrics(dataset.coco, r, dataset.image_ids) for r in results]
    return {"AP": [m["AP"] for m in metrics], "AP50": [m["AP50"] for m in metrics], "identical": identical,
            "ap_images": len(dataset)}


# ---- main --------------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True, help="a trained small-fast checkpoint (BCCD)")
    ap.add_argument("--images", type=Path, required=True, help="folder of images (the first N in name order)")
    ap.add_argument("--data", type=Path, help="a --data folder for the AP comparison of part 2 (optional)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--num-images", type=int, default=20)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=30, help="decode: median of this many runs of each")
    ap.add_argument("--path-repeats", type=int, default=3, help="whole path: median of this many passes")
    ap.add_argument("--max-size", type=int, default=1024, help="the network graphs' --max-size")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--num-dets", type=int, default=1000)
    ap.add_argument("--skip-paths", action="store_true", help="decode alone only (part 1)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[: args.num_images]
    images = [read_image(p) for p in files]
    info = machine()
    print(info, flush=True)
    settings = {"k": args.k, "num_dets": args.num_dets}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        one, two = real_heads(args.checkpoint, images[:1], flip=False), real_heads(args.checkpoint, images[:1],
                                                                                   flip=True)
        graphs = {centre: export_decode(work / f"decode-{centre}.onnx", one if centre else one[:6], centre=centre,
                                        **settings) for centre in (False, True)}
        traced = traced_fast_path_check(one[:6], work / "traced.onnx", plain=session(graphs[False], 1), **settings)
        print(f"decode's fast path traced: {traced}", flush=True)
        cases = {"BCCD real, batch 1": one, "BCCD real, batch 2 (flip)": two,
                 "COCO-like synthetic, batch 1": coco_like_heads(1), "COCO-like synthetic, batch 2": coco_like_heads(2)}
        print("| heads | shape | centre | threads | decode (PyTorch) | graph (onnxruntime) | graph (PyTorch) | "
              "ort / decode | same | valid rows | load |\n|---|---|---|---|---|---|---|---|---|---|---|")
        rows = bench_decode(cases, graphs=graphs, threads=[int(t) for t in args.threads.split(",")],
                            repeats=args.repeats, **settings)
        paths = [] if args.skip_paths else bench_paths(
            args.checkpoint, images, workdir=work, max_size=args.max_size, repeats=args.path_repeats,
            data=args.data, split=args.split, **settings)
    for r in paths:
        ap_text = (f", AP outside / inside {r['AP'][0]:.4f} / {r['AP'][1]:.4f}, AP50 {r['AP50'][0]:.4f} / "
                   f"{r['AP50'][1]:.4f}, identical {r['identical']} ({r['ap_images']} images)" if "AP" in r else "")
        print(f"whole path, flip {'on' if r['flip'] else 'off'}, 1 thread: outside {r['outside_ms']:.1f} ms, "
              f"inside {r['inside_ms']:.1f} ms per image ({r['images']} images){ap_text}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "traced_fast_path": traced, "decode": rows,
                                         "paths": paths, "images": [str(f) for f in files]}, indent=1))


if __name__ == "__main__":
    main()
