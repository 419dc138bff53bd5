"""The shared test-time path of eval, detect, visualize-heatmaps and training-time validation.

images (BGR uint8) -> letterboxed batch (one forward per test scale; with flip the mirrored copies ride in
the same batch) -> raw head outputs (or ground truth with an oracle) -> decode -> mirrored detections
flipped back -> image pixels -> per image: all scales and both flips concatenated -> soft-NMS -> the top
`max_per_image`. Each stage is timed (pre-processing, network, decoding, NMS).

Detections are numpy float arrays [N, 6]: x1, y1, x2, y2 (image pixels, continuous coordinates, clipped to
the image), score, class (contiguous index into the checkpoint's class list), sorted by score.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cornernet_cli.config import DecodeConfig, preset_test_settings
from cornernet_cli.data.letterbox import Letterbox, output_size
from cornernet_cli.data.transforms import flip_boxes, flip_image, prepare_test_image
from cornernet_cli.model.cornernet import CentreOutputs, CornerOutputs
from cornernet_cli.postprocess import detections_to_image, merge_detections

ORACLES = ("heatmaps", "heatmaps+offsets")
STAGES = ("preprocess", "network", "decode", "nms")


@dataclass
class StageTimer:
    """Wall-clock seconds per stage (time.perf_counter; CUDA is synchronised before each reading)."""

    seconds: dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in STAGES})
    images: int = 0
    device: torch.device | None = None

    def tick(self) -> float:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def add(self, stage: str, start: float) -> float:
        now = self.tick()
        self.seconds[stage] += now - start
        return now

    def per_image_ms(self) -> dict[str, float]:
        """Milliseconds per image for each stage and their total."""
        n = max(self.images, 1)
        out = {s: 1000.0 * self.seconds[s] / n for s in STAGES}
        out["total"] = sum(out.values())
        return out


def stack_inputs(tensors: Sequence[torch.Tensor], boxes: Sequence[Letterbox], stride: int = 4
                 ) -> tuple[torch.Tensor, list[Letterbox]]:
    """Pad [3, h_i, w_i] inputs at the bottom / right with 0 (the mean colour after normalisation) to a common
    [B, 3, H, W] and return the Letterboxes rewritten for that canvas (same offset, larger input / output size
    for a network of output stride `stride`), so `output_to_image` stays exact for every image of the batch."""
    height = max(t.shape[1] for t in tensors)
    width = max(t.shape[2] for t in tensors)
    batch = torch.zeros(len(tensors), 3, height, width)
    out = []
    for i, (t, lb) in enumerate(zip(tensors, boxes)):
        batch[i, :, : t.shape[1], : t.shape[2]] = t
        out.append(Letterbox(image_size=lb.image_size, scale=lb.scale, input_size=(height, width), offset=lb.offset,
                             output_size=output_size((height, width), stride)))
    return batch, out


def _logit(p: np.ndarray, eps: float = 1e-6) -> torch.Tensor:
    p = np.clip(p, eps, 1.0 - eps)
    return torch.from_numpy(np.log(p / (1.0 - p)).astype(np.float32))


def oracle_outputs(
    gt_boxes: Sequence[np.ndarray],
    gt_labels: Sequence[np.ndarray],
    *,
    num_classes: int,
    input_size: tuple[int, int],
    output_size: tuple[int, int],
    mode: str,
    predicted: CornerOutputs | None = None,
    ae_threshold: float = 0.5,
    gt_embeddings: bool = True,
) -> CornerOutputs:
    """Ground-truth head outputs for a batch (the paper's error analysis, section 4.5).

    gt_boxes[i]: [N_i, 4] x1, y1, x2, y2 in input (canvas) pixels; gt_labels[i]: [N_i] in [0, C);
    input_size, output_size: (height, width). Heatmaps are the training targets (gaussians of the object
    radius) as logits; embeddings are ground truth too (object j of an image gets (j + 1) * spacing at both
    its corners, spacing > ae_threshold, so grouping is exact); offsets are ground truth with mode
    "heatmaps+offsets" and the network's (`predicted`) with mode "heatmaps". gt_embeddings=False keeps the
    network's embeddings instead (the paper's setting, which measures its grouping too). When `predicted` has
    centre heads, the centre heatmap is ground truth too (and the centre offsets, with "heatmaps+offsets").
    Returns CornerOutputs of [B, C, h, w] / [B, 1, h, w] / [B, 2, h, w] on the CPU.
    """
    from cornernet_cli.targets import encode_targets

    if mode not in ORACLES:
        raise ValueError(f"oracle must be one of {', '.join(ORACLES)}, got {mode!r}")
    if (mode == "heatmaps" or not gt_embeddings) and predicted is None:
        raise ValueError("this oracle keeps some of the network's outputs: pass `predicted`")
    h, w = output_size
    b = len(gt_boxes)
    spacing = max(1.0, 2.0 * ae_threshold)
    centres = predicted is not None and predicted.ct_heat is not None
    kinds = ("tl", "br", "ct") if centres else ("tl", "br")
    heats = {c: torch.zeros(b, num_classes, h, w) for c in kinds}
    embs = {"tl": torch.zeros(b, 1, h * w), "br": torch.zeros(b, 1, h * w)}
    offs = {c: torch.zeros(b, 2, h * w) for c in kinds}
    for i, (boxes, labels) in enumerate(zip(gt_boxes, gt_labels)):
        t = encode_targets(boxes, labels, num_classes, input_size, output_size, centres=centres)
        ident = (torch.arange(len(t["keep"]), dtype=torch.float32) + 1.0) * spacing
        for c in kinds:
            heats[c][i] = _logit(t[f"{c}_heat"])
            index = torch.from_numpy(t[f"{c}_index"])
            offs[c][i, :, index] = torch.from_numpy(t[f"{c}_off"]).T
            if c in embs:
                embs[c][i, 0, index] = ident
    if mode == "heatmaps":
        off = {c: getattr(predicted, f"{c}_off").float().cpu() for c in kinds}
    else:
        off = {c: offs[c].view(b, 2, h, w) for c in kinds}
    if gt_embeddings:
        tl_emb, br_emb = embs["tl"].view(b, 1, h, w), embs["br"].view(b, 1, h, w)
    else:
        tl_emb, br_emb = predicted.tl_emb.float().cpu(), predicted.br_emb.float().cpu()
    corners = (heats["tl"], heats["br"], tl_emb, br_emb, off["tl"], off["br"])
    if centres:
        return CentreOutputs(*corners, ct_heat=heats["ct"], ct_off=off["ct"])
    return CornerOutputs(*corners)


def _memory_format(model: nn.Module) -> torch.memory_format:
    """channels_last when the model's convolution weights are (as `load_model` leaves them), else contiguous."""
    weight = next((p for p in model.parameters() if p.dim() == 4), None)
    if weight is not None and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _to_device(outputs: CornerOutputs, device: torch.device) -> CornerOutputs:
    return outputs.map(lambda t: t.to(device))


@torch.inference_mode()
def detect_images(
    model: nn.Module | None,
    images: Sequence[np.ndarray],
    *,
    device: torch.device | str = "cpu",
    num_classes: int | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    params: DecodeConfig = DecodeConfig(),
    oracle: str | None = None,
    oracle_gt_embeddings: bool = True,
    gt: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    timer: StageTimer | None = None,
    return_outputs: bool = False,
    amp: str = "off",
) -> list[np.ndarray] | tuple[list[np.ndarray], list]:
    """Detect objects in a batch of BGR uint8 images [H_i, W_i, 3] (any sizes).

    model: a CornerNet in eval mode (None only with oracle="heatmaps+offsets"; then give num_classes); the
    inputs are padded and the boxes mapped back for its `output_stride` (4 without a model).
    scales: test scales (paper: 0.5, 0.75, 1, 1.25, 1.5); flip: add the mirrored image to the batch and
    concatenate both detection sets before soft-NMS (the paper's test-time flip).
    oracle / gt: replace the head outputs by ground truth built from gt[i] = (boxes [N, 4] image pixels,
    labels [N]) (see `oracle_outputs`).
    Returns one [N_i, 6] array per image: x1, y1, x2, y2 (image pixels, clipped), score, class; sorted by
    score, at most params.max_per_image. amp: run the network under autocast (off | bf16 | fp16, see
    `cornernet_cli.engine.precision`); the heads are decoded in fp32. With return_outputs, also the per-scale list of
    (CornerOutputs on the CPU, Letterboxes) for the first scale's batch (for visualisation).
    """
    from cornernet_cli.decode import decode
    from cornernet_cli.engine.precision import amp_dtype, autocast

    device = torch.device(device)
    dtype = amp_dtype(amp, device)
    timer = timer if timer is not None else StageTimer()
    timer.device = device
    if model is None and oracle != "heatmaps+offsets":
        raise ValueError("a model is needed unless oracle='heatmaps+offsets'")
    if oracle is not None and gt is None:
        raise ValueError("an oracle needs the ground truth `gt`")
    if num_classes is None:
        num_classes = int(model.num_classes)
    stride = model.output_stride if model is not None else 4
    preset = preset_test_settings(getattr(model, "config", None))
    k = params.k if params.k is not None else preset["k"]
    num_dets = params.num_dets if params.num_dets is not None else preset["num_dets"]
    n = len(images)
    per_image: list[list[np.ndarray]] = [[] for _ in range(n)]
    kept_outputs: list = []
    for scale in scales:
        start = timer.tick()
        prepared = [prepare_test_image(img, float(scale), max_side=params.max_side, stride=stride) for img in images]
        batch, boxes = stack_inputs([p[0] for p in prepared], [p[1] for p in prepared], stride)
        if flip:
            batch = torch.cat([batch, flip_image(batch)], dim=0)
        if model is not None:
            batch = batch.to(device, non_blocking=True).contiguous(memory_format=_memory_format(model))
        start = timer.add("preprocess", start)

        outputs = None
        if model is not None:
            with autocast(device, dtype):
                outputs = model(batch)[-1]
            outputs = outputs.map(torch.Tensor.float)
        start = timer.add("network", start)

        if oracle is not None:
            in_h, in_w = boxes[0].input_size
            gt_in = [lb.image_to_input(g[0]) if len(g[0]) else np.zeros((0, 4)) for lb, g in zip(boxes, gt)]
            labels = [np.asarray(g[1], dtype=np.int64) for g in gt]
            if flip:
                gt_in = gt_in + [flip_boxes(b, in_w) for b in gt_in]
                labels = labels + labels
            outputs = oracle_outputs(gt_in, labels, num_classes=num_classes, input_size=(in_h, in_w),
                                     output_size=boxes[0].output_size, mode=oracle, predicted=outputs,
                                     gt_embeddings=oracle_gt_embeddings,
                                     ae_threshold=params.ae_threshold)
            outputs = _to_device(outputs, device)
        if return_outputs and not kept_outputs:
            kept_outputs.append((outputs.map(lambda t: t.float().cpu()), boxes))
        ct_heat = outputs.ct_heat if params.centre_check else None
        dets = decode(*outputs, ct_heat, outputs.ct_off, k=k, kernel=params.kernel,
                      ae_threshold=params.ae_threshold, num_dets=num_dets,
                      centre_n=params.centre_n).cpu().numpy()
        for i, lb in enumerate(boxes):
            per_image[i].append(detections_to_image(dets[i], lb))
            if flip:
                per_image[i].append(detections_to_image(dets[n + i], lb, mirrored=True))
        start = timer.add("decode", start)

    results = [merge_detections(parts, nms=params.nms, nms_sigma=params.nms_sigma, nms_iou=params.nms_iou,
                                score_threshold=params.score_threshold, max_per_image=params.max_per_image)
               for parts in per_image]
    timer.add("nms", start)
    timer.images += n
    return (results, kept_outputs) if return_outputs else results

