"""Bad input against every command: each case ends with a one-line `error: ...` naming the bad thing
(exit code 1 or 2) or with the bad item skipped and reported while the rest goes on; never a traceback.

Fixtures are written here (tiny 2-class checkpoint with random weights, 64 px synthetic data). Most cases run
the CLI in-process through `cornernet_cli.cli.main` (same code path as the console script, minus the
interpreter start-up); `test_console_script_*` run a few through a real subprocess. docs/reliability.md lists
the same table.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TRAIN = "--preset tiny --iters 1 --workers 0 --batch-size 2 --input-size 64 --device cpu"


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run `cornernet ARGS` in this process; (exit code, stdout, stderr). An exception escaping main() is a
    traceback the user would see: the test fails with it."""
    from cornernet_cli import cli

    out, err = io.StringIO(), io.StringIO()
    old_argv, old_env = sys.argv, os.environ.get("CORNERNET_MALLOC_TUNING")
    sys.argv = ["cornernet", *map(str, args)]
    os.environ["CORNERNET_MALLOC_TUNING"] = "0"  # no re-exec of this test process
    code: int | str = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as e:
                code = e.code if e.code is not None else 0
    finally:
        sys.argv = old_argv
        if old_env is None:
            os.environ.pop("CORNERNET_MALLOC_TUNING", None)
        else:
            os.environ["CORNERNET_MALLOC_TUNING"] = old_env
    return int(code), out.getvalue(), err.getvalue()


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"expected one 'error:' line, got:\n{err}"
    return lines[0]


# ---- fixtures ------------------------------------------------------------------------------------------------


def _with_config(src: Path, dst: Path, **changes) -> None:
    """A copy of checkpoint `src` whose metadata's model_config has `changes` (the tensors stay as they are)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta["model_config"] = json.dumps({**json.loads(meta["model_config"]), **changes})
    save_file(tensors, str(dst), metadata=meta)


def _variant(root: Path, name: str, mutate) -> Path:
    d = root / name
    shutil.copytree(root / "syn", d)
    for split in ("train", "val"):
        p = d / "annotations" / f"{split}.json"
        doc = json.loads(p.read_text())
        mutate(doc)
        p.write_text(json.dumps(doc))
    return d


def _coco_layout(root: Path, name: str, file_name: str) -> Path:
    """A standard COCO root (annotations/instances_{split}2017.json + {split}2017/) whose first image is
    `file_name`."""
    d = root / name
    for split in ("train", "val"):
        doc = json.loads((root / "syn" / "annotations" / f"{split}.json").read_text())
        (d / f"{split}2017").mkdir(parents=True)
        for im in doc["images"]:
            shutil.copy(root / "syn" / im["file_name"], d / f"{split}2017" / Path(im["file_name"]).name)
            im["file_name"] = Path(im["file_name"]).name
        doc["images"][0]["file_name"] = file_name
        (d / "annotations").mkdir(exist_ok=True)
        (d / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(doc))
    return d


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, Path]:
    from PIL import Image
    from safetensors.torch import save_file

    from cornernet_cli.data.synthetic import write_synthetic_dataset
    from cornernet_cli.engine.checkpoint import save_checkpoint
    from cornernet_cli.model import build_model

    r = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    save_checkpoint(r / "ck.safetensors", build_model("tiny", 2), class_names=["rectangle", "ellipse"])
    blob = (r / "ck.safetensors").read_bytes()
    (r / "trunc.safetensors").write_bytes(blob[: len(blob) // 2])
    save_file({"w": torch.zeros(3)}, str(r / "other.safetensors"))
    write_synthetic_dataset(r / "syn", num_train=4, num_val=2, image_size=64, num_classes=2, seed=0)

    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), (5, 5), 2)
    cv2.imwrite(str(r / "ok.jpg"), img)
    jpg = (r / "ok.jpg").read_bytes()
    (r / "trunc.jpg").write_bytes(jpg[: int(len(jpg) * 0.9)])
    cv2.imwrite(str(r / "alpha.png"), np.dstack([img, np.full((64, 64), 100, np.uint8)]))
    cv2.imwrite(str(r / "g16.png"), rng.integers(0, 65535, (48, 40), dtype=np.uint16))
    cv2.imwrite(str(r / "gray.png"), img[..., 0])
    cv2.imwrite(str(r / "one.png"), img[:1, :1])
    rot = np.zeros((40, 80, 3), np.uint8)
    rot[:, :40] = 255
    pil = Image.fromarray(rot)
    exif = pil.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    pil.save(r / "exif6.jpg", exif=exif)
    big = np.full((10000, 10000, 3), 90, np.uint8)
    big[4000:6000, 3000:7000] = (30, 30, 220)
    cv2.imwrite(str(r / "big.png"), big)  # mostly uniform: ~0.3 MB on disk
    os.mkfifo(r / "fifo.jpg")
    (r / "empty").mkdir()
    (r / "afile").write_text("a file, not a folder")

    _variant(r, "d_nan", lambda d: d["annotations"][0].__setitem__("bbox", [float("nan"), 1, 5, 5]))
    _variant(r, "d_inf", lambda d: d["annotations"][0].__setitem__("bbox", [1, 1, float("inf"), 5]))
    _variant(r, "d_str", lambda d: d["annotations"][0].__setitem__("bbox", "oops"))
    _variant(r, "d_cat", lambda d: d["annotations"][0].__setitem__("category_id", 77))
    _variant(r, "d_missing", lambda d: d["images"][0].__setitem__("file_name", "images/train/gone.png"))
    _variant(r, "d_abs", lambda d: d["images"][0].__setitem__("file_name", str(r / "ok.jpg")))
    _variant(r, "d_3cls", lambda d: d["categories"].append({"id": 3, "name": "star"}))
    _coco_layout(r, "c_escape", "../../ok.jpg")
    _variant(r, "d_nobox", lambda d: d.__setitem__("annotations", []))
    _variant(r, "d_crowd", lambda d: [a.__setitem__("iscrowd", 1) for a in d["annotations"]])
    _with_config(r / "ck.safetensors", r / "wide.safetensors", channels=[200000, 200000, 200000])
    _with_config(r / "ck.safetensors", r / "stacks.safetensors", num_stacks=100000)
    _with_config(r / "ck.safetensors", r / "one_stack.safetensors", num_stacks=1)
    _with_config(r / "ck.safetensors", r / "neg.safetensors", head_channels=-4)
    for name, text in (("d_malformed", '{"images": ['), ("d_deep", "[" * 100000 + "]" * 100000)):
        shutil.copytree(r / "syn", r / name)
        for split in ("train", "val"):
            (r / name / "annotations" / f"{split}.json").write_text(text)
    shutil.copytree(r / "syn", r / "d_dirjson")
    for split in ("train", "val"):
        (r / "d_dirjson" / "annotations" / f"{split}.json").unlink()
        (r / "d_dirjson" / "annotations" / f"{split}.json").mkdir()
    # huge JSON: 60,000 annotations (~5 MB) on the 4 training images, most of them fine
    doc = json.loads((r / "syn" / "annotations" / "train.json").read_text())
    xy = rng.uniform(0, 50, (60000, 2))
    doc["annotations"] = [{"id": i + 1, "image_id": 1 + i % 4, "category_id": 1 + i % 2, "iscrowd": 0,
                           "bbox": [round(x, 2), round(y, 2), 10.0, 12.0], "area": 120.0}
                          for i, (x, y) in enumerate(xy.tolist())]
    (r / "huge.json").write_text(json.dumps(doc))
    shutil.copytree(r / "syn" / "images", r / "images")  # huge.json's file_names are relative to its folder
    return {k: r / k for k in os.listdir(r)} | {"R": r}


# ---- the table ---------------------------------------------------------------------------------------------
# (case id, command line with {name} = fixture path, exit code, substrings the error line must contain)

ERRORS = [
    # missing paths
    ("train: missing --data", "train --data {R}/nope --out {R}/t " + TRAIN, 2, ["nope", "not a folder"]),
    ("eval: missing --data", "eval --checkpoint {ck.safetensors} --data {R}/nope --out {R}/e/r.json", 1,
     ["nope", "does not exist"]),
    ("eval: missing --checkpoint", "eval --checkpoint {R}/nope.safetensors --data {syn} --out {R}/e/r.json", 1,
     ["nope.safetensors", "not found"]),
    ("detect: missing input", "detect {R}/nope.jpg --checkpoint {ck.safetensors} --out {R}/o", 1,
     ["nope.jpg", "no such file"]),
    ("detect: missing --checkpoint", "detect {ok.jpg} --checkpoint {R}/nope.safetensors --out {R}/o", 1,
     ["nope.safetensors", "not found"]),
    ("visualize: missing image", "visualize-heatmaps {R}/nope.jpg --checkpoint {ck.safetensors} --out {R}/v.png",
     1, ["nope.jpg"]),
    ("import-weights: missing file", "import-weights {R}/nope.pth --format original -o {R}/i.safetensors", 1,
     ["nope.pth", "not found"]),
    ("export: missing --checkpoint", "export --checkpoint {R}/nope.safetensors -o {R}/m.onnx", 1,
     ["nope.safetensors", "not found"]),
    ("prepare-data: missing --source", "prepare-data --format coco --source {R}/nope --out {R}/p", 1,
     ["nope", "does not exist"]),
    ("ablate: missing --data", "ablate --data {R}/nope --out {R}/ab", 2, ["nope"]),
    # empty folders
    ("train: empty --data", "train --data {empty} --out {R}/t " + TRAIN, 1, ["empty", "no split 'train'"]),
    ("eval: empty --data", "eval --checkpoint {ck.safetensors} --data {empty} --out {R}/e/r.json", 1,
     ["empty", "no split 'val'"]),
    ("detect: empty folder", "detect {empty} --checkpoint {ck.safetensors} --out {R}/o", 1,
     ["empty", "no images"]),
    ("prepare-data voc: empty folder", "prepare-data --format voc --source {empty} --out {R}/p", 1,
     ["empty", "not a Pascal VOC folder"]),
    ("prepare-data yolo: empty folder", "prepare-data --format yolo --source {empty} --out {R}/p", 1,
     ["empty", "no class names"]),
    ("prepare-data coco: empty folder", "prepare-data --format coco --source {empty} --out {R}/p", 1,
     ["empty", "no split"]),
    ("ablate: empty --data", "ablate --data {empty} --out {R}/ab --iters 1", 2, ["empty", "no train split"]),
    # a directory where a file is expected
    ("eval: checkpoint is a folder", "eval --checkpoint {empty} --data {syn} --out {R}/e/r.json", 1,
     ["empty", "is a directory"]),
    ("detect: checkpoint is a folder", "detect {ok.jpg} --checkpoint {empty} --out {R}/o", 1,
     ["empty", "is a directory"]),
    ("export: checkpoint is a folder", "export --checkpoint {empty} -o {R}/m.onnx", 1, ["empty", "is a directory"]),
    ("visualize: image is a folder", "visualize-heatmaps {empty} --checkpoint {ck.safetensors} --out {R}/v.png",
     1, ["empty"]),
    ("import-weights: source is a folder", "import-weights {empty} --format original -o {R}/i.safetensors", 1,
     ["empty"]),
    ("train: annotation JSON is a folder", "train --data {d_dirjson} --out {R}/t " + TRAIN, 1,
     ["train.json", "not a file"]),
    # truncated / special image files
    ("visualize: truncated JPEG", "visualize-heatmaps {trunc.jpg} --checkpoint {ck.safetensors} --out {R}/v.png",
     1, ["trunc.jpg", "cannot decode"]),
    ("visualize: a FIFO named .jpg", "visualize-heatmaps {fifo.jpg} --checkpoint {ck.safetensors} --out {R}/v.png",
     1, ["fifo.jpg", "not a regular file"]),
    # malformed and huge JSON
    ("train: malformed JSON", "train --data {d_malformed} --out {R}/t " + TRAIN, 1,
     ["d_malformed/annotations/train.json", "JSONDecodeError"]),
    ("train: JSON nested 100000 deep", "train --data {d_deep} --out {R}/t " + TRAIN, 1,
     ["d_deep/annotations/train.json", "nested too deeply"]),
    ("eval: JSON nested 100000 deep", "eval --checkpoint {ck.safetensors} --data {d_deep} --out {R}/e/r.json", 1,
     ["d_deep/annotations/val.json", "nested too deeply"]),
    ("prepare-data: malformed JSON", "prepare-data --format coco --source {d_malformed} --out {R}/p", 1,
     ["d_malformed/annotations/train.json", "JSONDecodeError"]),
    ("prepare-data: JSON nested 100000 deep", "prepare-data --format coco --source {d_deep} --out {R}/p", 1,
     ["d_deep/annotations/train.json", "nested too deeply"]),
    ("visualize --gt: JSON nested 100000 deep",
     "visualize-heatmaps {ok.jpg} --checkpoint {ck.safetensors} --gt {d_deep} --out {R}/v.png", 1,
     ["d_deep/annotations/train.json", "nested too deeply"]),
    # annotations pointing at missing images, bad box values, unknown category ids
    ("train: image file missing", "train --data {d_missing} --out {R}/t " + TRAIN, 1,
     ["d_missing/annotations/train.json", "gone.png", "missing"]),
    ("eval: image file missing", "eval --checkpoint {ck.safetensors} --data {d_missing} --out {R}/e/r.json", 1,
     ["d_missing/annotations/val.json", "gone.png", "missing"]),
    ("train: NaN box", "train --data {d_nan} --out {R}/t " + TRAIN, 1,
     ["d_nan/annotations/train.json", "annotation 1", "[nan, 1, 5, 5]", "finite"]),
    ("train: infinite box", "train --data {d_inf} --out {R}/t " + TRAIN, 1,
     ["d_inf/annotations/train.json", "[1, 1, inf, 5]"]),
    ("train: bbox not numbers", "train --data {d_str} --out {R}/t " + TRAIN, 1, ["train.json", "'oops'"]),
    ("eval: NaN box", "eval --checkpoint {ck.safetensors} --data {d_nan} --out {R}/e/r.json", 1,
     ["d_nan/annotations/val.json", "nan"]),
    ("train: category id not in categories", "train --data {d_cat} --out {R}/t " + TRAIN, 1,
     ["d_cat/annotations/train.json", "category_id 77"]),
    ("eval: dataset classes unknown to the checkpoint",
     "eval --checkpoint {ck.safetensors} --data {d_3cls} --out {R}/e/r.json", 1, ["ck.safetensors", "star"]),
    ("visualize: --classes unknown to the checkpoint",
     "visualize-heatmaps {ok.jpg} --checkpoint {ck.safetensors} --classes star --out {R}/v.png", 1,
     ["'star'", "ck.safetensors"]),
    # paths escaping the dataset root
    ("train: absolute image path", "train --data {d_abs} --out {R}/t " + TRAIN, 1,
     ["d_abs/annotations/train.json", "ok.jpg", "not a relative path"]),
    ("eval: ../ out of a COCO root", "eval --checkpoint {ck.safetensors} --data {c_escape} --out {R}/e/r.json", 1,
     ["instances_val2017.json", "'../../ok.jpg'", "not a relative path"]),
    # checkpoints: truncated, another safetensors file
    ("eval: truncated checkpoint", "eval --checkpoint {trunc.safetensors} --data {syn} --out {R}/e/r.json", 1,
     ["trunc.safetensors", "truncated"]),
    ("detect: truncated checkpoint", "detect {ok.jpg} --checkpoint {trunc.safetensors} --out {R}/o", 1,
     ["trunc.safetensors", "truncated"]),
    ("visualize: truncated checkpoint",
     "visualize-heatmaps {ok.jpg} --checkpoint {trunc.safetensors} --out {R}/v.png", 1, ["trunc.safetensors"]),
    ("export: truncated checkpoint", "export --checkpoint {trunc.safetensors} -o {R}/m.onnx", 1,
     ["trunc.safetensors", "truncated"]),
    ("detect: other safetensors file", "detect {ok.jpg} --checkpoint {other.safetensors} --out {R}/o", 1,
     ["other.safetensors", "not a cornernet checkpoint"]),
    ("eval: other safetensors file", "eval --checkpoint {other.safetensors} --data {syn} --out {R}/e/r.json", 1,
     ["other.safetensors", "not a cornernet checkpoint"]),
    ("import-weights: a safetensors file", "import-weights {ck.safetensors} --format original -o {R}/i.safetensors",
     1, ["ck.safetensors"]),
    # a checkpoint whose metadata asks for far more than its tensors hold: refused before any allocation
    ("eval: checkpoint config asks for 200,000 channels",
     "eval --checkpoint {wide.safetensors} --data {syn} --out {R}/e/r.json", 1,
     ["wide.safetensors", "asks for at least", "refused before allocating"]),
    ("detect: checkpoint config asks for 200,000 channels",
     "detect {ok.jpg} --checkpoint {wide.safetensors} --out {R}/o", 1, ["wide.safetensors", "asks for at least"]),
    ("export: checkpoint config asks for 100,000 stacks", "export --checkpoint {stacks.safetensors} -o {R}/m.onnx",
     1, ["stacks.safetensors", "asks for at least"]),
    ("visualize: checkpoint config with 1 stack for 2 stacks of tensors",
     "visualize-heatmaps {ok.jpg} --checkpoint {one_stack.safetensors} --out {R}/v.png", 1,
     ["one_stack.safetensors", "do not fit its model_config", "unexpected"]),
    ("eval: checkpoint config with a negative size",
     "eval --checkpoint {neg.safetensors} --data {syn} --out {R}/e/r.json", 1,
     ["neg.safetensors", "head_channels=-4"]),
    # a training split without a box to learn from
    ("train: no boxes at all", "train --data {d_nobox} --out {R}/t " + TRAIN, 1,
     ["d_nobox/annotations/train.json", "no boxes"]),
    ("train: only crowd boxes", "train --data {d_crowd} --out {R}/t " + TRAIN, 1,
     ["d_crowd/annotations/train.json", "no boxes"]),
    # output folder not writable (a path through a regular file: fails for root too)
    ("train: --out not writable", "train --data {syn} --out {afile}/run " + TRAIN, 1, ["afile/run", "Not a directory"]),
    ("detect: --out not writable", "detect {ok.jpg} --checkpoint {ck.safetensors} --out {afile}/o --no-flip", 1,
     ["afile", "Not a directory"]),
    ("eval: --out not writable", "eval --checkpoint {ck.safetensors} --data {syn} --out {afile}/r.json --no-flip",
     1, ["afile"]),
    ("visualize: --out not writable", "visualize-heatmaps {ok.jpg} --checkpoint {ck.safetensors} --out {afile}/v.png",
     1, ["afile"]),
    ("prepare-data: --out not writable", "prepare-data --format coco --source {syn} --out {afile}/p", 1,
     ["afile/p", "Not a directory"]),
    ("export: --out not writable", "export --checkpoint {ck.safetensors} -o {afile}/m.onnx --height 32 --width 32",
     1, ["afile"]),
]


def _fill(template: str, env: dict[str, Path]) -> list[str]:
    return [re.sub(r"\{([^}]+)\}", lambda m: str(env[m.group(1)]), a) for a in template.split()]


@pytest.mark.parametrize("case,template,code,needles", ERRORS, ids=[c[0] for c in ERRORS])
def test_bad_input_gives_one_line_error(env, case, template, code, needles):
    exit_code, _, err = run_cli(*_fill(template, env))
    assert "Traceback" not in err
    line = one_line_error(err)
    assert exit_code == code, line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"


def test_detect_skips_and_reports_bad_files_and_runs_the_rest(env):
    out = env["R"] / "det_mixed"
    code, _, err = run_cli("detect", env["trunc.jpg"], env["fifo.jpg"], env["ok.jpg"], env["alpha.png"],
                           env["g16.png"], env["gray.png"], env["one.png"], env["exif6.jpg"],
                           "--checkpoint", env["ck.safetensors"], "--out", out, "--no-flip")
    assert code == 0 and "Traceback" not in err
    doc = json.loads((out / "detections.json").read_text())
    skipped = {Path(s["file"]).name: s["error"] for s in doc["skipped"]}
    assert set(skipped) == {"trunc.jpg", "fifo.jpg"}
    assert "cannot decode" in skipped["trunc.jpg"] and "not a regular file" in skipped["fifo.jpg"]
    assert "skipped" in err and "trunc.jpg" in err
    sizes = {Path(e["file"]).name: (e["width"], e["height"]) for e in doc["images"]}
    assert sizes == {"ok.jpg": (64, 64), "alpha.png": (64, 64), "g16.png": (40, 48), "gray.png": (64, 64),
                     "one.png": (1, 1), "exif6.jpg": (40, 80)}  # EXIF orientation 6: 80x40 stored, 40x80 shown
    for name in sizes:
        drawn = cv2.imread(str(out / (Path(name).stem + ".jpg")))
        assert drawn.shape[:2] == sizes[name][::-1]


def test_image_decoding_conventions(env):
    from cornernet_cli.data.image_io import read_image

    assert read_image(env["alpha.png"]).shape == (64, 64, 3)
    g16 = read_image(env["g16.png"])
    assert g16.dtype == np.uint8 and g16.shape == (48, 40, 3)
    gray = read_image(env["gray.png"])
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    rot = read_image(env["exif6.jpg"])  # stored 80 wide with the left half white; shown rotated clockwise
    assert rot.shape == (80, 40, 3)
    assert rot[:30].mean() > 200 and rot[50:].mean() < 50


def test_huge_image_is_shrunk_for_the_network_and_boxes_stay_in_image_pixels(env):
    from cornernet_cli.data.transforms import prepare_test_image

    image = np.zeros((10000, 6000, 3), np.uint8)
    tensor, lb = prepare_test_image(image, 1.0, max_side=256)
    assert max(tensor.shape[1:]) <= 256 | 127 and lb.image_size == (10000, 6000)
    # the whole output map maps back onto the whole image
    full = lb.output_to_image(np.array([[lb.offset[0] * lb.output_size[1] / lb.input_size[1],
                                         lb.offset[1] * lb.output_size[0] / lb.input_size[0], 0, 0]]))
    assert abs(full[0, 0]) < 1e-6 and abs(full[0, 1]) < 1e-6

    out = env["R"] / "det_big"
    # fp32: this untrained network's heatmaps are flat, and in bf16 they tie exactly, so the top corners all
    # fall in the first output row and pair into no box (trained networks score alike in both, docs/performance.md)
    code, _, err = run_cli("detect", env["big.png"], "--checkpoint", env["ck.safetensors"], "--out", out,
                           "--no-flip", "--max-side", "256", "--threshold", "0", "--amp", "off")
    assert code == 0 and "Traceback" not in err
    entry = json.loads((out / "detections.json").read_text())["images"][0]
    assert (entry["width"], entry["height"]) == (10000, 10000)
    boxes = np.array([d["bbox"] for d in entry["detections"]]).reshape(-1, 4)
    assert len(boxes) and boxes.min() >= 0 and boxes.max() <= 10000


def test_prepare_data_reports_bad_annotations_and_keeps_the_rest(env):
    """NaN / infinite / non-numeric boxes, unknown category ids, missing images and paths out of the source
    are each one problem line (file + value) while the remaining images and boxes are written."""
    r = env["R"]
    src = r / "pd_src"
    shutil.copytree(env["syn"], src)
    outside = r / "outside.jpg"
    cv2.imwrite(str(outside), np.zeros((64, 64, 3), np.uint8))
    doc = json.loads((src / "annotations" / "train.json").read_text())
    anns = doc["annotations"]
    anns[0]["bbox"], anns[1]["bbox"], anns[2]["bbox"] = [float("nan"), 1, 5, 5], [1, 1, float("inf"), 5], "x"
    anns[3]["category_id"] = 77
    anns[4]["bbox"] = [-5, -5, -3, 4]
    for ann in anns[:5]:
        ann["image_id"] = doc["images"][3]["id"]  # the one image left with a valid path
    doc["images"][0]["file_name"] = "../outside.jpg"
    doc["images"][1]["file_name"] = str(outside)
    doc["images"][2]["file_name"] = "images/train/gone.png"
    (src / "annotations" / "train.json").write_text(json.dumps(doc))
    code, out, err = run_cli("prepare-data", "--format", "coco", "--source", src, "--out", r / "pd_out")
    assert code == 0 and "Traceback" not in err
    text = " ".join(out.split())
    for needle in ("malformed file", "box [nan, 1, nan, 6]", "box [1, 1, inf, 6]", "bbox 'x'",
                   "unknown class", "category id 77", "negative-size box", "path outside dataset root",
                   "'../outside.jpg'", f"{outside!s}'", "missing image", "gone.png"):
        assert needle in text, needle
    written = json.loads((r / "pd_out" / "annotations" / "train.json").read_text())
    assert len(written["images"]) == 1  # 4 training images, 3 refused
    assert all("outside" not in im["file_name"] for im in written["images"])
    assert all(np.isfinite(a["bbox"]).all() for a in written["annotations"])
    # --strict turns the same problems into one error line
    code, _, err = run_cli("prepare-data", "--format", "coco", "--source", src, "--out", r / "pd_strict", "--strict")
    assert code == 1 and "--strict" in one_line_error(err)


def test_prepare_data_voc_filename_cannot_leave_jpegimages(env):
    r = env["R"] / "voc"
    (r / "Annotations").mkdir(parents=True)
    (r / "JPEGImages").mkdir()
    cv2.imwrite(str(r / "JPEGImages" / "a.jpg"), np.zeros((32, 32, 3), np.uint8))
    cv2.imwrite(str(r.parent / "secret.jpg"), np.zeros((48, 48, 3), np.uint8))
    box = "<object><name>x</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>20</xmax><ymax>20</ymax></bndbox></object>"
    (r / "Annotations" / "a.xml").write_text(f"<annotation><filename>a.jpg</filename>{box}</annotation>")
    (r / "Annotations" / "b.xml").write_text(f"<annotation><filename>../../secret.jpg</filename>{box}</annotation>")
    code, out, err = run_cli("prepare-data", "--format", "voc", "--source", r, "--out", env["R"] / "voc_out",
                             "--val-fraction", "0")
    assert code == 0 and "Traceback" not in err
    assert "missing image" in out and "b.jpg" in " ".join(out.split())  # fell back to the XML's own name
    written = json.loads((env["R"] / "voc_out" / "annotations" / "train.json").read_text())
    assert [Path(im["file_name"]).name for im in written["images"]] == ["a.jpg"]


def test_huge_annotation_file(env):
    """60,000 annotations (~5 MB): prepare-data converts them; malformed JSON is a one-line error."""
    code, out, err = run_cli("prepare-data", "--format", "coco", "--source", env["huge.json"], "--out",
                             env["R"] / "huge_out", "--val-fraction", "0")
    assert code == 0 and "Traceback" not in err
    written = json.loads((env["R"] / "huge_out" / "annotations" / "train.json").read_text())
    assert len(written["annotations"]) == 60000


def test_resume_with_a_truncated_state_is_one_line_error(env):
    run = env["R"] / "trunc_run"
    run.mkdir()
    shutil.copy(env["ck.safetensors"], run / "last.safetensors")
    (run / "state.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    code, _, err = run_cli(*_fill("train --data {syn} --out {R}/trunc_run --resume " + TRAIN, env))
    line = one_line_error(err)
    assert code == 1 and "trunc_run" in line, line


def test_malicious_pickle_is_refused_by_import_weights(env, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"backbone.w": torch.zeros(2), "evil": Evil()}, tmp_path / "evil.pth")
    code, _, err = run_cli("import-weights", tmp_path / "evil.pth", "--format", "original", "-o",
                           tmp_path / "x.safetensors")
    line = one_line_error(err)
    assert code == 1 and "evil.pth" in line and "refused" in line
    assert not marker.exists() and not (tmp_path / "x.safetensors").exists()


def test_no_pickle_is_loaded_anywhere_but_import_weights():
    """Grep the package: the only deserialiser that can run code is import-weights' torch.load, and it is
    called with weights_only=True."""
    risky = re.compile(r"torch\.load\(|torch\.jit\.load\(|pickle\.loads?\(|Unpickler|np\.load\(|numpy\.load\("
                       r"|allow_pickle\s*=\s*True|\bdill\b|\bjoblib\b|\bshelve\b|cloudpickle|marshal\.loads?\(")
    found = []
    for path in sorted((REPO / "cornernet_cli").rglob("*.py")):
        text = path.read_text()
        for m in risky.finditer(text):
            call = text[m.start(): text.find(")", m.start()) + 1]
            found.append((path.name, call))
    assert found and all(name == "import_weights.py" and "weights_only=True" in call for name, call in found), found


def test_checkpoint_files_get_normal_permissions(tmp_path):
    from cornernet_cli.atomic import atomic_write

    atomic_write(tmp_path / "x.bin", lambda tmp: Path(tmp).write_bytes(b"1"))
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "x.bin").stat().st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["x.bin"]


# ---- through the real console script ----------------------------------------------------------------------


def _subprocess(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cornernet_cli.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_console_script_bad_checkpoint_and_unwritable_out(env):
    p = _subprocess("export", "--checkpoint", env["trunc.safetensors"], "-o", env["R"] / "m.onnx")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "trunc.safetensors" in one_line_error(p.stderr)
    p = _subprocess("prepare-data", "--format", "coco", "--source", env["syn"], "--out", env["afile"] / "p")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "afile/p" in one_line_error(p.stderr)


def test_console_script_usage_error_exits_2(env):
    p = _subprocess("eval", "--data", env["syn"], "--scales", "a,b")
    assert p.returncode == 2 and "Traceback" not in p.stderr and "--scales" in p.stderr


# ---- devices: every command refuses one this machine lacks, in one line -------------------------------------

DEVICE_CASES = [
    ("eval", "eval --checkpoint {ck.safetensors} --data {syn} --out {R}/e/r.json --device cuda"),
    ("eval, oracle without checkpoint", "eval --oracle heatmaps+offsets --data {syn} --out {R}/e/r.json --device cuda"),
    ("detect", "detect {ok.jpg} --checkpoint {ck.safetensors} --out {R}/o --device cuda"),
    ("visualize-heatmaps", "visualize-heatmaps {ok.jpg} --checkpoint {ck.safetensors} --out {R}/v.png --device cuda"),
    ("bench", "bench --preset tiny --device cuda"),
    ("train", "train --data {syn} --out {R}/t_dev " + TRAIN.replace("--device cpu", "--device cuda")),
    ("ablate", "ablate --data {syn} --out {R}/ab_dev --iters 1 --device cuda"),
    ("demo", "demo --out {R}/demo_dev --device cuda"),
]


@pytest.mark.parametrize("case,template", DEVICE_CASES, ids=[c[0] for c in DEVICE_CASES])
def test_unavailable_device_is_one_line_error(env, monkeypatch, case, template):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without CUDA
    exit_code, _, err = run_cli(*_fill(template, env))
    assert "Traceback" not in err
    line = one_line_error(err)
    assert exit_code == 2 and "cuda" in line and "not available" in line, line
    assert not (env["R"] / "t_dev").exists() and not (env["R"] / "demo_dev").exists()


def test_malformed_device_names_are_one_line_errors(env):
    for device in ("cuda:x", "gpu", "mps"):
        code, _, err = run_cli(*_fill("eval --checkpoint {ck.safetensors} --data {syn} --out {R}/e/r.json", env),
                               "--device", device)
        assert code == 2 and device in one_line_error(err)


def test_checkpoint_metadata_is_checked_before_allocating(env, monkeypatch):
    """The 200,000-channel config would ask for ~1.4 TB: it must be refused from the header alone, before a
    single parameter of the network exists (no module construction at all)."""
    from cornernet_cli.engine.checkpoint import load_model
    from cornernet_cli.errors import CornerNetError
    from cornernet_cli.model import cornernet

    built = []
    monkeypatch.setattr(cornernet.CornerNet, "__init__", lambda self, **kw: built.append(kw) or 1 / 0)
    for name in ("wide.safetensors", "stacks.safetensors"):
        with pytest.raises(CornerNetError, match="refused before allocating"):
            load_model(env[name])
    assert built == []


def test_least_size_is_a_lower_bound_of_the_real_network():
    """least_size (the cap checked against a file) never exceeds what the network really holds: every preset,
    with and without corner pooling and the centre head, and random small configs; counted independently by
    building each network on the meta device."""
    import dataclasses
    import math

    from cornernet_cli.config import PRESETS, ModelConfig
    from cornernet_cli.engine.checkpoint import least_size
    from cornernet_cli.model.cornernet import CornerNet

    rng = np.random.default_rng(0)
    configs = [dataclasses.replace(c, corner_pool=p, centre_head=h) for c in PRESETS.values()
               for p in (True, False) for h in (True, False)]
    for _ in range(20):
        depth = int(rng.integers(2, 6))
        configs.append(ModelConfig(num_stacks=int(rng.integers(1, 4)), stem_channels=int(rng.integers(1, 40)),
                                   channels=tuple(int(v) for v in rng.integers(1, 40, depth)),
                                   blocks=tuple(int(v) for v in rng.integers(1, 4, depth)),
                                   cnv_channels=int(rng.integers(1, 40)), pool_channels=int(rng.integers(1, 40)),
                                   head_channels=int(rng.integers(1, 40)), num_classes=int(rng.integers(1, 90))))
    for config in configs:
        with torch.device("meta"):
            state = CornerNet.from_config(config).state_dict()
        elements, tensors = least_size(config)
        assert elements <= sum(math.prod(v.shape) for v in state.values()), config
        assert tensors <= len(state), config
    # and it is not vacuous: at least 40% of the real size for the presets
    for config in PRESETS.values():
        with torch.device("meta"):
            real = sum(v.numel() for v in CornerNet.from_config(config).state_dict().values())
        assert least_size(config)[0] >= 0.4 * real


def test_yolo_label_file_with_a_byte_order_mark_keeps_its_first_box(tmp_path):
    """Windows editors start UTF-8 files with a byte-order mark; the first line must still parse (CRLF too)."""
    src = tmp_path / "yolo"
    for split in ("train", "valid"):
        (src / split / "images").mkdir(parents=True)
        (src / split / "labels").mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(src / split / "images" / f"{i}.jpg"), np.full((40, 60, 3), 128, np.uint8))
            text = "0 0.5 0.5 0.2 0.4\r\n1 0.25 0.25 0.1 0.1\r\n"
            (src / split / "labels" / f"{i}.txt").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (src / "data.yaml").write_bytes(b"\xef\xbb\xbfnames: [cat, dog]\n")
    (src / "classes.txt").write_text("unused\n")
    code, _, err = run_cli("prepare-data", "--format", "yolo", "--source", src, "--out", tmp_path / "out", "--strict")
    assert code == 0, err
    doc = json.loads((tmp_path / "out" / "annotations" / "train.json").read_text())
    assert [c["name"] for c in doc["categories"]] == ["cat", "dog"]
    boxes = sorted((a["image_id"], a["category_id"], a["bbox"]) for a in doc["annotations"])
    # 0.5, 0.5, 0.2, 0.4 of 60 x 40 -> x 24, y 12, w 12, h 16; 0.25, 0.25, 0.1, 0.1 -> x 12, y 8, w 6, h 4
    assert len(boxes) == 4
    for image_id in {b[0] for b in boxes}:
        mine = [(c, [round(v, 3) for v in bb]) for i, c, bb in boxes if i == image_id]
        assert sorted(mine) == [(1, [24.0, 12.0, 12.0, 16.0]), (2, [12.0, 8.0, 6.0, 4.0])]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["problems"] == []
