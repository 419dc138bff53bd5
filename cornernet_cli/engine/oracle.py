"""Oracle detection: ground truth in place of the network's head outputs (the paper's error analysis, 4.5).

`oracle_outputs` builds the heads from ground-truth boxes; `detect_with_oracle` runs the test-time loop of
`cornernet_cli.engine.inference` with them, for `cornernet_cli.engine.evaluate`. Mode "heatmaps" replaces the
heatmaps (offsets stay the network's), "heatmaps+offsets" the offsets too; embeddings are ground truth
unless gt_embeddings=False (then the network's: the paper's setting, which measures its grouping too).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from cornernet_cli.data.letterbox import Letterbox
from cornernet_cli.data.transforms import flip_boxes
from cornernet_cli.decoder import Decoder
from cornernet_cli.engine.inference import StageTimer, detect_with, network_heads
from cornernet_cli.model.cornernet import CornerOutputs
from cornernet_cli.targets import encode_targets

ORACLES = ("heatmaps", "heatmaps+offsets")


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
    if mode not in ORACLES:
        raise ValueError(f"mode must be one of {', '.join(ORACLES)}, got {mode!r}")
    if (mode == "heatmaps" or not gt_embeddings) and predicted is None:
        raise ValueError("this oracle keeps some of the network's outputs: pass `predicted`")
    h, w = output_size
    b = len(gt_boxes)
    spacing = max(1.0, 2.0 * ae_threshold)
    centres = predicted is not None and predicted.has_centre
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
    centre = (heats["ct"], off["ct"]) if centres else ()
    return CornerOutputs.from_heads((heats["tl"], heats["br"], tl_emb, br_emb, off["tl"], off["br"]) + centre)


def _memory_format(model: nn.Module) -> torch.memory_format:
    """channels_last when the model's convolution weights are (as `load_model` leaves them), else contiguous."""
    weight = next((p for p in model.parameters() if p.dim() == 4), None)
    if weight is not None and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _gt_in_input(gt: Sequence[tuple[np.ndarray, np.ndarray]], boxes: Sequence[Letterbox], *, flip: bool
                 ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """gt[i] = (boxes [N, 4] image pixels, labels [N]) -> boxes in input (canvas) pixels and int64 labels, with
    the mirrored copies' after the images' own when flip."""
    in_w = boxes[0].input_size[1]
    gt_in = [lb.image_to_input(g[0]) if len(g[0]) else np.zeros((0, 4)) for lb, g in zip(boxes, gt)]
    labels = [np.asarray(g[1], dtype=np.int64) for g in gt]
    if flip:
        gt_in = gt_in + [flip_boxes(b, in_w) for b in gt_in]
        labels = labels + labels
    return gt_in, labels


def detect_with_oracle(
    model: nn.Module | None,
    images: Sequence[np.ndarray],
    gt: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    mode: str,
    gt_embeddings: bool = True,
    num_classes: int | None = None,
    decoder: Decoder | None = None,
    device: torch.device | str = "cpu",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    amp: str = "off",
    timer: StageTimer | None = None,
) -> list[np.ndarray]:
    """`detect_images` with the head outputs replaced by ground truth built from gt[i] = (boxes [N, 4] image
    pixels x1, y1, x2, y2, labels [N] in [0, C)) for images[i] (see `oracle_outputs` for `mode` and
    `gt_embeddings`).

    model: a CornerNet in eval mode, run for the outputs the oracle keeps; None only with mode
    "heatmaps+offsets" and gt_embeddings (then give num_classes; inputs are padded for output stride 4).
    Returns one [N_i, 6] array per image, as `detect_images`.
    """
    if model is None and (mode != "heatmaps+offsets" or not gt_embeddings):
        raise ValueError("model is needed unless mode='heatmaps+offsets' with gt_embeddings")
    device = torch.device(device)
    timer = timer if timer is not None else StageTimer()
    timer.device = device
    config = getattr(model, "config", None)
    num_classes = num_classes if num_classes is not None else int(model.num_classes)
    decoder = decoder if decoder is not None else Decoder.for_network(model_config=config)

    def heads(batch: torch.Tensor, boxes: list[Letterbox]) -> CornerOutputs:
        predicted = network_heads(model, batch, device=device, amp=amp) if model is not None else None
        gt_in, labels = _gt_in_input(gt, boxes, flip=flip)
        outputs = oracle_outputs(gt_in, labels, num_classes=num_classes, input_size=boxes[0].input_size,
                                 output_size=boxes[0].output_size, mode=mode, predicted=predicted,
                                 ae_threshold=decoder.settings.ae_threshold, gt_embeddings=gt_embeddings)
        return outputs.map(lambda t: t.to(device))

    stride = model.output_stride if model is not None else 4
    return detect_with(heads, images, decoder, stride=stride, scales=scales, flip=flip, timer=timer)
