"""Test-time padding: the paper's rule, the tight rule of the CPU presets, and networks taking what they get."""

import numpy as np
import pytest
import torch

from cornernet_cli.config import DecodeConfig, model_config, preset_test_settings
from cornernet_cli.data.letterbox import PAPER_PADDING, Padding
from cornernet_cli.data.transforms import prepare_test_image
from cornernet_cli.decoder import Decoder
from cornernet_cli.errors import SettingError
from cornernet_cli.model import build_model


def test_paper_rule_is_the_original_bitwise_or():
    assert all(PAPER_PADDING.size(n) == n | 127 for n in range(1, 2000))


@pytest.mark.parametrize("multiple", [16, 32, 128])
def test_tight_rule_is_the_next_multiple(multiple):
    sizes = [Padding(multiple, paper=False).size(n) for n in range(1, 600)]
    for n, padded in zip(range(1, 600), sizes):
        assert padded % multiple == 0 and n <= padded < n + multiple


@pytest.mark.parametrize("preset,multiple", [("hourglass-104", 128), ("small-fast", 32), ("small", 32),
                                             ("squeeze", 128), ("tiny", 16)])
def test_input_multiple_counts_the_hourglass_downsamplings(preset, multiple):
    assert model_config(preset).input_multiple == multiple


def test_cpu_presets_test_without_flip_and_pad_tightly():
    for preset in ("small", "small-fast"):
        config = model_config(preset, num_classes=3, centre_head=True)
        assert preset_test_settings(config)["flip"] is False
        decoder = Decoder.for_network(model_config=config)
        assert decoder.settings.padding == "tight" and decoder.padding == Padding(32, paper=False)
    for preset in ("hourglass-104", "squeeze", "tiny"):  # the sources' procedures stay as they were
        decoder = Decoder.for_network(model_config=model_config(preset))
        assert decoder.padding == PAPER_PADDING
    assert preset_test_settings(model_config("hourglass-104"))["flip"] is True
    paper = Decoder.for_network(DecodeConfig(padding="paper"), model_config("small-fast"))
    assert paper.padding == PAPER_PADDING
    with pytest.raises(SettingError, match="padding must be paper or tight, got 'snug'"):
        Decoder.for_network(DecodeConfig(padding="snug"), model_config("small-fast"))


@pytest.mark.parametrize("height,width", [(240, 320), (97, 211), (32, 33)])
def test_a_tightly_padded_input_fits_the_network(height, width):
    # The network must take every tight canvas and give the output map the Letterbox expects.
    torch.manual_seed(0)
    config = model_config("small-fast", num_classes=2)
    model = build_model("small-fast", num_classes=2).eval()
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    x, box = prepare_test_image(image, 1.0, stride=4, padding=Decoder.for_network(model_config=config).padding)
    assert x.shape[1] % 32 == 0 and x.shape[2] % 32 == 0 and x.shape[1] < height + 32
    with torch.no_grad():
        heads = model(x[None])[-1]
    assert tuple(heads.tl_heat.shape[-2:]) == box.output_size
