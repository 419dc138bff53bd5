"""amp "auto": bf16 exactly where the CPU computes it natively, fp32 elsewhere; resolved once per training run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import cornernet_cli.engine.precision as precision
from cornernet_cli.data.synthetic import write_synthetic_dataset
from cornernet_cli.engine.settings import train_settings
from cornernet_cli.errors import SettingError


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn-amp")
    write_synthetic_dataset(out, num_train=6, num_val=2, image_size=96, seed=5)
    return out


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_only_on_a_cpu_with_native_bf16(native, monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    assert precision.resolve_amp("auto", "cpu") == ("bf16" if native else "off")
    assert precision.amp_dtype("auto", "cpu") is (torch.bfloat16 if native else None)
    assert precision.resolve_amp("auto", "cuda") == "off"  # GPU recipes were measured in fp32
    for explicit in ("off", "bf16"):
        assert precision.resolve_amp(explicit, "cpu") == explicit


def test_native_bf16_follows_torchs_cpu_checks(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not precision.native_bf16()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert precision.native_bf16()


def test_a_bad_amp_names_the_parameter():
    with pytest.raises(SettingError, match="amp must be auto, off, bf16 or fp16, got 'fp8'"):
        precision.resolve_amp("fp8", "cpu")


@pytest.mark.parametrize("native", [True, False])
def test_cpu_recipe_records_what_auto_resolved_to(syn, native, monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    s = train_settings(data_dir=syn)
    assert s.train.amp == ("bf16" if native else "off")  # config.json holds the resolved value, never "auto"
    assert any(c.startswith(f"amp {s.train.amp}:") for c in s.choices)
    assert train_settings(data_dir=syn, overrides={"amp": "off"}).train.amp == "off"
    assert train_settings(data_dir=syn, preset="hourglass-104").train.amp == "off"  # the paper's recipe: fp32
