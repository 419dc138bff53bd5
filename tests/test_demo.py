"""`cornernet demo` end to end on a tiny budget: every artefact it promises is written and valid."""

import json

from cornernet_cli.demo import run_demo
from cornernet_cli.engine.checkpoint import load_model


def test_demo_writes_everything(tmp_path):
    result = run_demo(tmp_path / "demo", iters=4, num_train=12, num_val=3, batch_size=2, workers=0, num_detect=2)
    assert result.checkpoint.is_file()
    model, meta = load_model(result.checkpoint)
    assert meta["class_names"] == ["rectangle", "ellipse", "triangle", "cross"]
    assert meta["model_config"].num_stacks == 1 and meta["model_config"].channels == (64, 96, 128, 160)
    metrics = json.loads((tmp_path / "demo" / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["AP50"] <= 1.0 and metrics["images"] == 3
    results = json.loads((tmp_path / "demo" / "eval" / "results.json").read_text())
    assert isinstance(results, list)
    assert len(result.detections) == 2 and all(p.is_file() for p in result.detections)
    assert set(result.minutes) == {"data", "train", "eval", "detect"}


def test_demo_rejects_unknown_settings(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="unknown demo settings: bogus"):
        run_demo(tmp_path, bogus=1)
