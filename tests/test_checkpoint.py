import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from cornernet_cli.engine.checkpoint import load_model, read_checkpoint, save_checkpoint
from cornernet_cli.errors import CornerNetError
from cornernet_cli.model import build_model


def _trained_like(model):
    with torch.no_grad():  # non-default BN statistics so the round trip checks buffers too
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    return model


def test_round_trip_same_outputs_bit_for_bit(tmp_path):
    model = _trained_like(build_model("tiny", num_classes=3)).eval()
    path = save_checkpoint(tmp_path / "m.safetensors", model, class_names=["a", "b", "c"],
                           category_ids=[1, 7, 42], extra={"step": 5})
    loaded, meta = load_model(path)
    assert meta["class_names"] == ["a", "b", "c"] and meta["category_ids"] == [1, 7, 42]
    assert meta["extra"] == {"step": 5} and meta["model_config"] == model.config
    assert not loaded.training
    for (ka, a), (kb, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert ka == kb and torch.equal(a, b)
    # load_model leaves the weights channels_last; in the same memory format the outputs are bit-identical
    assert loaded.backbone.stem[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 61, 90)
    with torch.no_grad():
        for a, b in zip(model(x)[0].heads(), loaded(x)[0].heads()):
            assert torch.equal(a, b)


def test_no_pickle_in_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", build_model("tiny", 1), class_names=["x"])
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    header = json.loads(path.read_bytes()[8 : 8 + header_len])
    assert header["__metadata__"]["format"] == "cornernet-checkpoint"


def test_missing_file(tmp_path):
    with pytest.raises(CornerNetError, match="not found"):
        load_model(tmp_path / "nope.safetensors")


def test_truncated_file(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", build_model("tiny", 2), class_names=["a", "b"])
    data = path.read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CornerNetError, match="cut.safetensors.*not a readable safetensors"):
        load_model(bad)


def test_not_a_safetensors_file(tmp_path):
    bad = tmp_path / "junk.safetensors"
    bad.write_bytes(b"hello world, not a checkpoint at all")
    with pytest.raises(CornerNetError, match="junk.safetensors"):
        load_model(bad)


def test_other_safetensors_file(tmp_path):
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(other))
    with pytest.raises(CornerNetError, match="not a cornernet checkpoint"):
        load_model(other)


@pytest.mark.parametrize("other,message", [
    ("small", r"forged.safetensors: its model_config asks for at least 1,792,864 parameters in 23 tensors but the "
              r"file holds 159,372 in 432; refused before allocating"),
    ({"pool_channels": 4}, r"forged.safetensors: its tensors do not fit its model_config: \d+ shape mismatch"),
], ids=["larger network", "same size, other shapes"])
def test_other_architecture(tmp_path, other, message):
    """A checkpoint whose tensors do not fit the architecture its metadata names: refused from the header,
    before the network is built (a larger one by the size bound, one of similar size by the shapes)."""
    path = save_checkpoint(tmp_path / "tiny.safetensors", build_model("tiny", 2), class_names=["a", "b"])
    state, _ = read_checkpoint(path)
    config = (build_model(other, 2).config.to_dict() if isinstance(other, str)
              else {**build_model("tiny", 2).config.to_dict(), **other})
    raw_meta = {"format": "cornernet-checkpoint", "version": "1",
                "model_config": json.dumps(config), "class_names": json.dumps(["a", "b"]),
                "category_ids": json.dumps([1, 2]), "extra": "{}"}
    forged = tmp_path / "forged.safetensors"
    save_file(state, str(forged), metadata=raw_meta)
    with pytest.raises(CornerNetError, match=message):
        load_model(forged)


def test_class_count_mismatch(tmp_path):
    state = {k: v.contiguous() for k, v in build_model("tiny", 2).state_dict().items()}
    cfg = build_model("tiny", 2).config.to_dict()
    meta = {"format": "cornernet-checkpoint", "version": "1", "model_config": json.dumps(cfg),
            "class_names": json.dumps(["a", "b", "c"]), "category_ids": json.dumps([1, 2, 3]), "extra": "{}"}
    path = tmp_path / "mismatch.safetensors"
    save_file(state, str(path), metadata=meta)
    with pytest.raises(CornerNetError, match="3 class names"):
        load_model(path)


def test_future_version(tmp_path):
    path = tmp_path / "v9.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"format": "cornernet-checkpoint", "version": "9"})
    with pytest.raises(CornerNetError, match="version '9'"):
        load_model(path)
