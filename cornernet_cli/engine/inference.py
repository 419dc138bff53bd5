"""The shared test-time path of eval, detect, visualize-heatmaps and training-time validation.

images (BGR uint8) -> letterboxed batch (one forward per test scale; with flip the mirrored copies ride in
the same batch) -> raw head outputs -> decode -> mirrored detections flipped back -> image pixels -> per
image: all scales and both flips concatenated -> soft-NMS -> the top `max_per_image` (`Decoder`). A
`StageTimer`, when given, times each stage (pre-processing, network, decoding, NMS).

`detect_images` runs a network; `detect_with` runs the same loop on any source of head outputs (the
oracles of `cornernet_cli.engine.oracle` put ground truth there).

Detections are numpy float arrays [N, 6]: x1, y1, x2, y2 (image pixels, continuous coordinates, clipped to
the image), score, class (contiguous index into the checkpoint's class list), sorted by score.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cornernet_cli.data.letterbox import PAPER_PADDING, Letterbox, Padding, output_size
from cornernet_cli.data.transforms import flip_image, prepare_test_image
from cornernet_cli.decoder import Decoder
from cornernet_cli.engine.precision import amp_dtype, autocast
from cornernet_cli.model.cornernet import CornerOutputs

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


def _memory_format(model: nn.Module) -> torch.memory_format:
    """channels_last when the model's convolution weights are (as `load_model` leaves them), else contiguous."""
    weight = next((p for p in model.parameters() if p.dim() == 4), None)
    if weight is not None and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def letterbox_batch(images: Sequence[np.ndarray], *, scale: float, flip: bool, stride: int, max_side: int,
                    padding: Padding = PAPER_PADDING) -> tuple[torch.Tensor, list[Letterbox]]:
    """BGR uint8 images [H_i, W_i, 3] -> the normalised network input at test scale `scale`, [B, 3, H, W]
    padded to a common size (`stack_inputs`), followed by the B mirrored copies when flip ([2B, 3, H, W]), and
    each image's Letterbox. stride: the network's output stride; max_side: a longer input side (pixels) is
    shrunk to this; padding: each image's canvas (`Decoder.padding`)."""
    prepared = [prepare_test_image(img, float(scale), max_side=max_side, stride=stride, padding=padding)
                for img in images]
    batch, boxes = stack_inputs([p[0] for p in prepared], [p[1] for p in prepared], stride)
    if flip:
        batch = torch.cat([batch, flip_image(batch)], dim=0)
    return batch, boxes


@torch.inference_mode()
def network_heads(model: nn.Module, batch: torch.Tensor, *, device: torch.device, amp: str = "off") -> CornerOutputs:
    """The last stack's head outputs of `model` (eval mode) for `batch` [B, 3, H, W], float32, on `device`.

    The batch is moved to `device` in the model's memory format; amp: run the network under autocast (off |
    bf16 | fp16, see `cornernet_cli.engine.precision`), the heads are still returned in float32.
    """
    dtype = amp_dtype(amp, device)
    batch = batch.to(device, non_blocking=True).contiguous(memory_format=_memory_format(model))
    with autocast(device, dtype):
        outputs = model(batch)[-1]
    return outputs.map(torch.Tensor.float)


#: (letterboxed batch [B, 3, H, W] on the CPU, its Letterboxes) -> the heads for that batch.
HeadSource = Callable[[torch.Tensor, list[Letterbox]], CornerOutputs]


@torch.inference_mode()
def detect_with(heads: HeadSource, images: Sequence[np.ndarray], decoder: Decoder, *, stride: int,
                scales: Sequence[float] = (1.0,), flip: bool = False, timer: StageTimer | None = None
                ) -> list[np.ndarray]:
    """The test-time loop over `scales` with `heads` in the network's place (see `detect_images`).

    stride: the output stride the heads are at (inputs are padded and boxes mapped back for it). The
    "network" stage of `timer` is the `heads` call (with a network: copying the batch to its device too).
    """
    timer = timer if timer is not None else StageTimer()
    per_image: list[list[np.ndarray]] = [[] for _ in images]
    for scale in scales:
        start = timer.tick()
        batch, boxes = letterbox_batch(images, scale=scale, flip=flip, stride=stride,
                                       max_side=decoder.settings.max_side, padding=decoder.padding)
        start = timer.add("preprocess", start)
        outputs = heads(batch, boxes)
        start = timer.add("network", start)
        for parts, dets in zip(per_image, decoder.image_detections(outputs, boxes, flip=flip)):
            parts.append(dets)
        start = timer.add("decode", start)
    results = [decoder.merge(parts) for parts in per_image]
    timer.add("nms", start)
    timer.images += len(images)
    return results


def detect_images(
    model: nn.Module,
    images: Sequence[np.ndarray],
    *,
    decoder: Decoder | None = None,
    device: torch.device | str = "cpu",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    amp: str = "off",
    timer: StageTimer | None = None,
) -> list[np.ndarray]:
    """Detect objects in a batch of BGR uint8 images [H_i, W_i, 3] (any sizes) with `model`.

    model: a CornerNet (or an `OnnxNetwork`) in eval mode; the inputs are padded and the boxes mapped back for
    its `output_stride`. decoder: decoding and post-processing (None: `Decoder.for_network` with the paper's
    DecodeConfig and the model's preset). scales: test scales (paper: 0.5, 0.75, 1, 1.25, 1.5); flip: add the
    mirrored image to the batch and concatenate both detection sets before soft-NMS (the paper's test-time
    flip). amp: the network's autocast (off | bf16 | fp16); the heads are decoded in fp32. timer: adds each
    stage's seconds to it.
    Returns one [N_i, 6] array per image: x1, y1, x2, y2 (image pixels, clipped), score, class; sorted by
    score, at most decoder.settings.max_per_image.
    """
    device = torch.device(device)
    timer = timer if timer is not None else StageTimer()
    timer.device = device
    if decoder is None:
        decoder = Decoder.for_network(model_config=getattr(model, "config", None))

    def heads(batch: torch.Tensor, _boxes: list[Letterbox]) -> CornerOutputs:
        return network_heads(model, batch, device=device, amp=amp)

    return detect_with(heads, images, decoder, stride=model.output_stride, scales=scales, flip=flip, timer=timer)


@torch.inference_mode()
def heads_and_detections(model: nn.Module, image: np.ndarray, *, scale: float, device: torch.device | str = "cpu",
                         decoder: Decoder | None = None) -> tuple[np.ndarray, CornerOutputs, Letterbox]:
    """One BGR uint8 image [H, W, 3] at one test scale, without flip, for pictures of what the heads saw: its
    detections [N, 6] (as `detect_images`), the head outputs they were decoded from (float32, on the CPU) and
    the image's Letterbox (output map <-> image pixels)."""
    device = torch.device(device)
    if decoder is None:
        decoder = Decoder.for_network(model_config=getattr(model, "config", None))
    batch, (box,) = letterbox_batch([image], scale=scale, flip=False, stride=model.output_stride,
                                    max_side=decoder.settings.max_side, padding=decoder.padding)
    outputs = network_heads(model, batch, device=device).map(torch.Tensor.cpu)
    dets = decoder.merge(decoder.image_detections(outputs, [box], flip=False))
    return dets, outputs, box
