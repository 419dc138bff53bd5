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


def test_demo_reuses_its_data_only_when_the_settings_match(tmp_path):
    from cornernet_cli.data.synthetic import write_synthetic_dataset
    from cornernet_cli.demo import _same_synthetic_data

    gen = dict(image_size=64, seed=0, sizes=(20, 120), max_iou=0.0)
    assert not _same_synthetic_data(tmp_path, gen, 3, 2)  # nothing there yet
    write_synthetic_dataset(tmp_path, num_train=3, num_val=2, **gen)
    assert _same_synthetic_data(tmp_path, gen, 3, 2)
    assert not _same_synthetic_data(tmp_path, {**gen, "max_iou": 0.4}, 3, 2)
    assert not _same_synthetic_data(tmp_path, {**gen, "seed": 1}, 3, 2)
    assert not _same_synthetic_data(tmp_path, gen, 4, 2)
    (tmp_path / "annotations" / "val.json").write_text("{not json")
    assert not _same_synthetic_data(tmp_path, gen, 3, 2)


def test_interrupted_demo_resumes_only_its_own_run(tmp_path, monkeypatch):
    """An interrupted demo continues; one left by other settings (an older demo: another preset) starts afresh
    instead of failing on the model mismatch."""
    import cornernet_cli.engine.train as train_module

    resumed = []
    original = train_module.train
    monkeypatch.setattr(train_module, "train", lambda **kw: resumed.append(kw["resume"]) or original(**kw))
    kw = dict(num_train=12, num_val=3, batch_size=2, workers=0, num_detect=1, image_size=64, input_size=64)
    run_demo(tmp_path, iters=4, preset="tiny", **kw)
    train_dir = tmp_path / "train"
    (train_dir / "summary.json").unlink()  # as if it had been stopped before the end
    run_demo(tmp_path, iters=4, preset="tiny", **kw)  # the same settings: resumed
    steps = [json.loads(x)["step"] for x in (train_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # resuming at the end logged nothing twice
    (train_dir / "summary.json").unlink()
    run_demo(tmp_path, iters=3, preset="small-fast", **kw)  # other settings: a fresh run
    assert resumed == [False, True, False]
    model, meta = load_model(train_dir / "last.safetensors")
    assert meta["model_config"].cnv_channels == 64 and meta["model_config"].head_channels == 32
    assert json.loads((train_dir / "summary.json").read_text())["step"] == 3
