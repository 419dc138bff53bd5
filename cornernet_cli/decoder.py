"""The decoder object of the test-time path: DecodeConfig resolved once for one network.

`Decoder.for_network` fills in the settings a DecodeConfig leaves to the model's preset (k, num_dets, padding);
the object then says how test inputs are padded (`padding`), turns a batch of head outputs into detections in
image pixels (`cornernet_cli.decode.decode`, the letterbox mapped back, mirrored halves flipped back) and
merges an image's detections (soft-NMS, best max_per_image). The test-time loop
(`cornernet_cli.engine.inference`) takes it as one argument.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cornernet_cli.config import PADDINGS, DecodeConfig, ModelConfig, preset_test_settings
from cornernet_cli.data.letterbox import PAPER_PADDING, Letterbox, Padding
from cornernet_cli.decode import decode
from cornernet_cli.errors import check_choice
from cornernet_cli.model.cornernet import CornerOutputs
from cornernet_cli.postprocess import detections_to_image, merge_detections


@dataclass(frozen=True)
class Decoder:
    """Head outputs -> detections, with `settings` (a DecodeConfig whose k, num_dets and padding are set);
    padding: the test inputs' canvas (the network's input multiple for settings.padding "tight")."""

    settings: DecodeConfig
    padding: Padding = PAPER_PADDING

    def __post_init__(self):
        if self.settings.k is None or self.settings.num_dets is None or self.settings.padding is None:
            raise ValueError("settings.k, settings.num_dets and settings.padding must be set: build with "
                             "Decoder.for_network")

    @classmethod
    def for_network(cls, settings: DecodeConfig = DecodeConfig(), model_config: ModelConfig | None = None
                    ) -> Decoder:
        """`settings` with k, num_dets and padding left at None taken from the preset of `model_config`
        (`preset_test_settings`; the paper's 100 / 1000 / "paper" for None or a custom network)."""
        preset = preset_test_settings(model_config)
        settings = dataclasses.replace(settings, **{name: preset[name] for name in ("k", "num_dets", "padding")
                                                    if getattr(settings, name) is None})
        check_choice("padding", settings.padding, PADDINGS)
        if settings.padding == "tight" and model_config is not None:
            return cls(settings, Padding(model_config.input_multiple, paper=False))
        return cls(settings, PAPER_PADDING)

    def decode(self, outputs: CornerOutputs) -> torch.Tensor:
        """[B, num_dets, 8] float32 in output-map coordinates (see `cornernet_cli.decode.decode`); the centre
        check applies when `outputs` has centre heads and settings.centre_check."""
        s = self.settings
        ct_heat = outputs.ct_heat if s.centre_check else None
        return decode(*outputs.corners(), ct_heat, outputs.ct_off, k=s.k, kernel=s.kernel,
                      ae_threshold=s.ae_threshold, num_dets=s.num_dets, centre_n=s.centre_n)

    def image_detections(self, outputs: CornerOutputs, letterboxes: Sequence[Letterbox], *, flip: bool
                         ) -> list[np.ndarray]:
        """One [N_i, 8] float64 array per image (x1, y1, x2, y2 image pixels, score, tl_score, br_score, class),
        not yet NMS-ed. outputs: the heads of a batch of len(letterboxes) images, followed by their mirrored
        copies when flip (whose boxes are flipped back and concatenated after the image's own)."""
        dets = self.decode(outputs).cpu().numpy()
        n = len(letterboxes)
        per_image = []
        for i, lb in enumerate(letterboxes):
            parts = [detections_to_image(dets[i], lb)]
            if flip:
                parts.append(detections_to_image(dets[n + i], lb, mirrored=True))
            per_image.append(np.concatenate(parts, axis=0))
        return per_image

    def merge(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        """One image's detections from every scale ([N, 8] arrays) -> [K, 6] float64: x1, y1, x2, y2 (image
        pixels), score after soft-NMS, class index; sorted by score, K <= settings.max_per_image."""
        s = self.settings
        return merge_detections(parts, nms=s.nms, nms_sigma=s.nms_sigma, nms_iou=s.nms_iou,
                                score_threshold=s.score_threshold, max_per_image=s.max_per_image)
