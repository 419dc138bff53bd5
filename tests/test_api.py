"""The Python API (cornernet_cli.api): its docstring examples, predict against `cornernet detect`, the input
kinds and colour orders, result conversions, train's settings against `cornernet train`'s, and bad input."""

from __future__ import annotations

import doctest
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

import cornernet_cli
from cornernet_cli import Detector, api
from cornernet_cli.cli import app
from cornernet_cli.config import TRAIN_DEFAULTS
from cornernet_cli.data.synthetic import write_synthetic_dataset
from cornernet_cli.engine import train as train_module
from cornernet_cli.engine.settings import train_settings
from cornernet_cli.errors import CornerNetError, SettingError
from tests.test_evaluate import make_trained_run

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return make_trained_run(tmp_path_factory.mktemp("api"))


@pytest.fixture(scope="module")
def detector(trained):
    return Detector(trained[1])


def test_docstring_examples_run(trained, tmp_path, monkeypatch):
    data, checkpoint = trained
    monkeypatch.chdir(tmp_path)
    results = [doctest.testmod(module, extraglobs={"data": data, "checkpoint": checkpoint}, report=True,
                               optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
               for module in (api, api.detector, api.training, api.evaluation, api.deploy)]
    assert sum(r.failed for r in results) == 0
    documented = [api.Detector, api.Detector.predict, api.Detections, api.train, api.evaluate, api.export]
    assert all(">>>" in (obj.__doc__ or "") for obj in documented)
    assert sum(r.attempted for r in results) >= 25
    assert (tmp_path / "runs" / "tiny" / "best.safetensors").is_file() and (tmp_path / "model.onnx").is_file()


def test_the_docs_session_runs(tmp_path, monkeypatch):
    """docs/api.md's notebook session, every line of it, with its shown outputs checked."""
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    page = (DOCS / "api.md").read_text()
    session = "\n".join(re.findall(r"^```pycon\n(.*?)^```$", page, flags=re.S | re.M))
    test = doctest.DocTestParser().get_doctest(session, {}, "docs/api.md", str(DOCS / "api.md"), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    result = runner.run(test)
    assert result.failed == 0 and result.attempted >= 30
    assert (tmp_path / "shapes_000000.jpg").is_file() and (tmp_path / "shapes.onnx").is_file()


def test_package_root_exports_the_api():
    from cornernet_cli.export import export_onnx  # the submodule of the same name stays importable

    assert cornernet_cli.Detector is api.Detector and cornernet_cli.train is api.train
    assert cornernet_cli.export is api.export and callable(export_onnx)
    assert all(getattr(cornernet_cli, name) is getattr(api, name) for name in cornernet_cli.__all__)
    assert set(cornernet_cli.__all__) <= set(dir(api))
    with pytest.raises(AttributeError, match="no_such"):
        cornernet_cli.no_such  # noqa: B018


def test_predict_equals_the_detect_command(trained, detector, tmp_path):
    data, checkpoint = trained
    images = sorted((data / "images" / "val").glob("*.jpg"))
    out = tmp_path / "detect"
    r = CliRunner().invoke(app, ["detect", *map(str, images), "--checkpoint", str(checkpoint), "--out", str(out),
                                 "--threshold", "0.05"])
    assert r.exit_code == 0, r.output
    expected = json.loads((out / "detections.json").read_text())["images"]
    found = detector.predict(images, threshold=0.05)
    assert [json.loads(f.to_json()) for f in found] == expected
    assert sum(len(f) for f in found) > 0
    for f in found:
        assert f.boxes.dtype == np.float32 and f.boxes.shape == (len(f), 4)
        assert np.all(np.diff(f.scores) <= 0) and np.all(f.scores >= 0.05)
        assert f.names == [detector.classes[int(c)] for c in f.class_ids]


def test_every_input_kind_gives_the_same_boxes(trained, detector):
    path = trained[0] / "images" / "val" / "000001.jpg"
    bgr = cv2.imread(str(path))
    reference = detector.predict(path, threshold=0.0)
    assert len(reference) > 0 and reference.path == path

    class FakePIL:  # what PIL.Image.Image offers: convert("RGB") -> something np.asarray reads as RGB
        def convert(self, mode):
            assert mode == "RGB"
            return bgr[:, :, ::-1].copy()

    rgba = np.dstack([bgr[:, :, ::-1], np.full(bgr.shape[:2], 255, np.uint8)])
    bgra = np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)])
    kinds = {"bgr": (bgr, {}), "rgb": (np.ascontiguousarray(bgr[:, :, ::-1]), {"rgb": True}),
             "rgb view": (bgr[:, :, ::-1], {"rgb": True}), "pil-like": (FakePIL(), {}), "bgra": (bgra, {}),
             "rgba": (rgba, {"rgb": True})}
    try:
        from PIL import Image
        kinds["PIL"] = (Image.open(path), {})
    except ImportError:
        pass
    for kind, (image, kwargs) in kinds.items():
        got = detector.predict(image, threshold=0.0, **kwargs)
        assert got.path is None
        np.testing.assert_array_equal(got.boxes, reference.boxes, err_msg=kind)
        np.testing.assert_array_equal(got.scores, reference.scores, err_msg=kind)
    # an RGB array read as BGR is another image: the flag matters
    swapped = detector.predict(np.ascontiguousarray(bgr[:, :, ::-1]), threshold=0.0)
    assert not np.array_equal(swapped.scores, reference.scores)
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(detector.predict(grey, threshold=0.0).boxes,
                                  detector.predict(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), threshold=0.0).boxes)


def test_detector_takes_a_model_name(trained, detector, tmp_path, monkeypatch):
    """A name from `cornernet models` resolves through the hub (here one already imported into the cache)."""
    import shutil

    from cornernet_cli import hub

    monkeypatch.setenv("CORNERNET_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(hub.WEIGHTS, "shapes-tiny", {**hub.WEIGHTS["cornernet-hg104-coco"], "preset": "tiny"})
    hub.checkpoint_path("shapes-tiny").parent.mkdir(parents=True)
    shutil.copy(trained[1], hub.checkpoint_path("shapes-tiny"))
    named = Detector("shapes-tiny", offline=True)
    assert named.checkpoint == hub.checkpoint_path("shapes-tiny") and named.classes == detector.classes
    image = trained[0] / "images" / "val" / "000003.jpg"
    np.testing.assert_array_equal(named.predict(image).boxes, detector.predict(image).boxes)
    with pytest.raises(CornerNetError, match="no-such-model"):
        Detector("no-such-model", offline=True)


def test_predict_defaults_to_the_trained_test_scale(trained, tmp_path):
    from cornernet_cli.engine.checkpoint import read_checkpoint, save_checkpoint
    from cornernet_cli.model.cornernet import CornerNet

    state, meta = read_checkpoint(trained[1])
    model = CornerNet.from_config(meta["model_config"])
    model.load_state_dict(state)
    ckpt = save_checkpoint(tmp_path / "half.safetensors", model, class_names=meta["class_names"],
                           category_ids=meta["category_ids"], extra={**meta["extra"], "test_scale": 0.5})
    half = Detector(ckpt)
    assert half.test_scales == (0.5,)
    image = trained[0] / "images" / "val" / "000002.jpg"
    at_half = half.predict(image, threshold=0.0, scales=[0.5])
    np.testing.assert_array_equal(half.predict(image, threshold=0.0).scores, at_half.scores)
    assert not np.array_equal(half.predict(image, threshold=0.0, scales=[1.0]).scores, at_half.scores)


def test_results_convert_to_coco_and_draw(detector, trained, tmp_path):
    found = detector.predict(trained[0] / "images" / "val" / "000000.jpg", threshold=0.0)
    coco = found.to_coco(image_id=12)
    assert len(coco) == len(found)
    for entry, box, score, cls in zip(coco, found.boxes, found.scores, found.class_ids):
        x, y, w, h = entry["bbox"]
        np.testing.assert_allclose([x, y, x + w, y + h], box, atol=2e-3)
        assert entry["image_id"] == 12 and entry["score"] == pytest.approx(float(score), abs=1e-5)
        assert entry["category_id"] == detector.category_ids[int(cls)]
    drawn = found.plot()
    assert drawn.shape == found.image.shape and (drawn != found.image).any()
    np.testing.assert_array_equal(found.plot(rgb=True), drawn[:, :, ::-1])
    saved = found.save(tmp_path / "drawn.png")
    np.testing.assert_array_equal(cv2.imread(str(saved)), drawn)
    empty = detector.predict(found.image, threshold=1.0)
    assert len(empty) == 0 and empty.to_coco() == [] and (empty.plot() == found.image).all()
    assert json.loads(empty.to_json())["detections"] == [] and "0 in array" in repr(empty)


def test_bad_input_is_one_clear_error(detector, tmp_path):
    image = np.zeros((64, 64, 3), np.uint8)
    cases = [
        (lambda: detector.predict(image.astype(np.float32)), SettingError, r"images must be a uint8 array .*float32"),
        (lambda: detector.predict([image, np.zeros((64, 64, 2), np.uint8)]), SettingError,
         r"images\[1\] .*\[64, 64, 2\]"),
        (lambda: detector.predict([image, 3]), SettingError, r"images\[1\] must be .* got int"),
        (lambda: detector.predict(tmp_path / "nope.jpg"), CornerNetError, "nope.jpg"),
        (lambda: detector.predict(image, threshold=2), SettingError, "threshold must be in 0..1, got 2"),
        (lambda: detector.predict(image, scales=[0]), SettingError, r"scales must be positive numbers, got \[0\]"),
        (lambda: detector.predict(image, amp="fp8"), SettingError, "amp must be auto, off, bf16 or fp16, got 'fp8'"),
        (lambda: Detector(tmp_path / "missing.safetensors"), CornerNetError, "not found: .*missing.safetensors"),
        (lambda: Detector(tmp_path), CornerNetError, "is a directory"),
        (lambda: api.export(tmp_path / "missing.safetensors", tmp_path / "m.onnx"), CornerNetError, "not found"),
        (lambda: api.train(tmp_path / "none"), SettingError, "data '.*none' is not a folder"),
        (lambda: api.train(tmp_path, lr_schedule="linear"), SettingError, "lr_schedule must be step or cosine"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind, match=message):
            call()


def test_train_uses_the_commands_settings(tmp_path, monkeypatch):
    """The trap the API must not have: a preset's run gets that preset's defaults, as `cornernet train` does."""
    data = tmp_path / "syn"
    write_synthetic_dataset(data, num_train=4, num_val=2, image_size=64, num_classes=2, seed=0)
    seen = []
    monkeypatch.setattr(train_module, "train", lambda **kw: seen.append(kw) or train_module.TrainResult(
        out_dir=tmp_path / "run", step=0, status="stopped"))
    run = api.train(data, preset="small", iters=30, device="cpu", out=tmp_path / "run", progress=False)
    small = TRAIN_DEFAULTS["small"]
    assert run.settings.train.batch_size == small["batch_size"] and run.settings.train.lr == small["lr"]
    assert run.settings.train.lr_steps == (27,) and run.settings.model.centre_head
    assert seen[0]["train_cfg"] == run.settings.train and seen[0]["model_cfg"] == run.settings.model
    assert run.checkpoint.name == "last.safetensors"  # no best yet: a stopped run
    default = api.train(data, device="cpu", progress=False)
    want = train_settings(data_dir=data, device_type="cpu", overrides={"seed": 0})
    got = default.settings
    assert (got.model, got.data, got.train) == (want.model, want.data, want.train)
    assert default.settings.preset == "small-fast" and default.settings.train.time_budget == 25.0


def test_train_matches_the_command_bit_for_bit(tmp_path):
    data = tmp_path / "syn"
    write_synthetic_dataset(data, num_train=4, num_val=2, image_size=64, num_classes=2, seed=0)
    args = dict(preset="tiny", iters=3, batch_size=2, input_size=64, lr_steps=[2], random_scales=[0.8, 1.0])
    r = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "cli"), "--preset", "tiny",
                                 "--iters", "3", "--batch-size", "2", "--input-size", "64", "--lr-steps", "2",
                                 "--random-scales", "0.8,1", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    run = api.train(data, out=tmp_path / "api", device="cpu", progress=False, **args)
    assert run.status == "finished" and run.step == 3 and run.best_ap is not None
    cli_cfg, api_cfg = (json.loads((tmp_path / d / "config.json").read_text()) for d in ("cli", "api"))
    for key in ("model", "data", "train"):
        assert cli_cfg[key] == api_cfg[key], key
    a, b = load_file(tmp_path / "cli" / "last.safetensors"), load_file(run.out_dir / "last.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_cli_names_flags_not_parameters(tmp_path):
    data = tmp_path / "syn"
    write_synthetic_dataset(data, num_train=2, num_val=0, image_size=64, num_classes=1, seed=0)
    runner = CliRunner()
    for argv, message in [
        (["--radius", "radius"], "--radius must be object, fixed or none, got 'radius'"),
        (["--lr-schedule", "linear"], "--lr-schedule must be step or cosine, got 'linear'"),
        (["--time", "5", "--iters", "3"], "give either --time or --iters / --epochs, not both"),
        (["--preset", "huge"], "unknown --preset 'huge'"),
    ]:
        r = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "run"), *argv])
        assert isinstance(r.exception, CornerNetError) and r.exception.exit_code == 2, (argv, r.output)
        assert str(r.exception) == message or str(r.exception).startswith(message), str(r.exception)
    r = runner.invoke(app, ["export", "--checkpoint", "x.safetensors", "--format", "tflite", "-o", "m"])
    assert str(r.exception) == "--format must be onnx, got 'tflite'"
