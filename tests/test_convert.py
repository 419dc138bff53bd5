"""prepare-data: VOC / YOLO / COCO readers on small written fixtures (malformed ones included), BCCD, image IO."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cornernet_cli.cli import app
from cornernet_cli.data.coco import CocoDetection, resolve_split
from cornernet_cli.data.convert import prepare_data, seeded_split
from cornernet_cli.data.image_io import read_image
from cornernet_cli.errors import CornerNetError


def _img(path: Path, h: int = 60, w: int = 80) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))


def _voc_xml(path: Path, filename: str, size: tuple[int, int], objects: list[tuple[str, tuple]]) -> None:
    objs = "".join(f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                   f"<ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><filename>{filename}</filename><size><width>{size[1]}</width>"
                    f"<height>{size[0]}</height><depth>3</depth></size>{objs}</annotation>")


def _kinds(report) -> dict[str, list]:
    out: dict[str, list] = {}
    for p in report.problems:
        out.setdefault(p.kind, []).append(p)
    return out


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    root = tmp_path / "voc"
    for i in range(4):
        _img(root / "JPEGImages" / f"im{i}.jpg")
    _voc_xml(root / "Annotations" / "im0.xml", "im0.jpg", (60, 80), [("cat", (10, 10, 30, 40)), ("dog", (5, 5, 5, 20))])
    _voc_xml(root / "Annotations" / "im1.xml", "im1.jpg", (60, 80),
             [("dog", (50, 30, 95, 50)), ("dog", (90, 5, 99, 9))])
    _voc_xml(root / "Annotations" / "im2.xml", "im2.jpg", (70, 80), [("cat", (1, 2, 3, 4))])  # wrong size
    _voc_xml(root / "Annotations" / "im3.xml", "im3.jpg", (60, 80), [])  # no boxes: kept
    _voc_xml(root / "Annotations" / "gone.xml", "gone.jpg", (60, 80), [("cat", (1, 1, 9, 9))])
    (root / "Annotations" / "bad.xml").write_text("<annotation><object>")
    return root


def test_voc_converter_reports_every_problem(voc: Path, tmp_path: Path):
    out = tmp_path / "out"
    report = prepare_data(format="voc", source=voc, out=out, val_fraction=0.4, seed=1)
    k = _kinds(report)
    assert [Path(p.file).name for p in k["malformed file"]] == ["bad.xml"]
    assert [Path(p.file).name for p in k["missing image"]] == ["gone.jpg"]
    assert "im0.xml" in k["zero-size box"][0].file and "[5, 5, 5, 20]" in k["zero-size box"][0].detail
    outside = k["box outside image"]
    assert len(outside) == 2 and {o.action.split(" ")[0] for o in outside} == {"clipped", "box"}  # clipped; dropped
    assert "im2.xml" in k["size mismatch"][0].file and "80x70" in k["size mismatch"][0].detail
    assert report.class_names == ["cat", "dog"]
    # 5 parsed images split 3/2 before validation (seeded); 4 usable ones; the JSONs hold every kept box
    assert sum(len(s.images) for s in report.splits) == 4 and [s.name for s in report.splits] == ["train", "val"]
    total = 0
    for split in ("train", "val"):
        ds = CocoDetection(*resolve_split(out, split))
        assert ds.class_names == ["cat", "dog"] and ds.category_ids == [1, 2]
        for i in range(len(ds)):
            s = ds[i]
            assert s.image.shape == (60, 80, 3)
            total += len(s.boxes)
            assert (s.boxes[:, 2] <= 80).all() and (s.boxes[:, 3] <= 60).all()
    assert total == 3  # cat im0, clipped dog im1 (50,30,80,50), cat im2
    assert json.loads((out / "report.json").read_text())["problems"]
    with pytest.raises(CornerNetError, match=r"\(strict\)"):
        prepare_data(format="voc", source=voc, out=tmp_path / "strict", strict=True)
    assert not (tmp_path / "strict").exists()


def test_voc_imagesets_splits(voc: Path, tmp_path: Path):
    (voc / "Annotations" / "bad.xml").unlink()
    sets = voc / "ImageSets" / "Main"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("im0\nim1\n")
    (sets / "val.txt").write_text("im2\n")
    (sets / "test.txt").write_text("im3\nnothere\n")
    report = prepare_data(format="voc", source=voc.parent, out=tmp_path / "o", copy_images=True)  # finds voc/
    assert {s.name: len(s.images) for s in report.splits} == {"train": 2, "val": 1, "test": 1}
    assert any(p.kind == "missing image" and "nothere" in p.detail for p in report.problems)
    doc = json.loads((tmp_path / "o" / "annotations" / "test.json").read_text())
    assert doc["images"][0]["file_name"] == "images/test/im3.jpg"
    assert (tmp_path / "o" / "images" / "test" / "im3.jpg").is_file()


@pytest.fixture
def yolo(tmp_path: Path) -> Path:
    root = tmp_path / "yolo"
    (root).mkdir()
    (root / "data.yaml").write_text("nc: 2\nnames: ['ball', 'box']\n")
    for split in ("train", "valid"):
        (root / split / "labels").mkdir(parents=True)
    _img(root / "train" / "images" / "a.jpg", 100, 200)
    (root / "train" / "labels" / "a.txt").write_text(
        "0 0.5 0.5 0.2 0.4\n"          # ok: (80, 30, 120, 70)
        "1 0.5 0.5 0.2\n"              # 4 numbers
        "7 0.5 0.5 0.1 0.1\n"          # class out of range
        "1 0.1 0.1 x 0.1\n"            # not a number
        "1 0.95 0.5 0.2 0.2\n")        # (170, 40, 210, 60): clipped to x2 = 200
    _img(root / "train" / "images" / "b.png", 100, 200)  # no label file: an image without boxes
    (root / "train" / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    _img(root / "valid" / "images" / "c.jpg", 50, 50)
    (root / "valid" / "labels" / "c.txt").write_text("1 0.1 0.1 0.5 0.1 0.5 0.5\n")  # polygon -> (5, 5, 25, 25)
    return root


def test_yolo_converter(yolo: Path, tmp_path: Path):
    out = tmp_path / "out"
    report = prepare_data(format="yolo", source=yolo, out=out)
    k = _kinds(report)
    assert k["malformed file"][0].file.endswith("a.txt:2") and "4 numbers" in k["malformed file"][0].detail
    assert k["malformed file"][1].file.endswith("a.txt:4")
    assert k["unknown class"][0].file.endswith("a.txt:3") and "class id 7" in k["unknown class"][0].detail
    assert k["missing image"][0].file.endswith("orphan.txt")
    assert k["box outside image"][0].file.endswith("a.txt:5")
    train = CocoDetection.from_folder(out, "train")
    assert train.class_names == ["ball", "box"] and len(train) == 2
    boxes, labels = train.targets(0)
    np.testing.assert_allclose(boxes, [[80, 30, 120, 70], [170, 40, 200, 60]], atol=1e-3)
    assert labels.tolist() == [0, 1]
    assert len(train.targets(1)[0]) == 0
    val = CocoDetection.from_folder(out, "val")
    np.testing.assert_allclose(val.targets(0)[0], [[5, 5, 25, 25]], atol=1e-3)


def test_yolo_flat_layout_with_classes_txt(tmp_path: Path):
    root = tmp_path / "flat"
    (root / "labels").mkdir(parents=True)
    (root / "classes.txt").write_text("a\nb\nc\n")
    for i in range(10):
        _img(root / "images" / f"{i}.jpg", 40, 40)
        (root / "labels" / f"{i}.txt").write_text(f"{i % 3} 0.5 0.5 0.5 0.5\n")
    r1 = prepare_data(format="yolo", source=root, out=tmp_path / "o1", val_fraction=0.3, seed=5)
    r2 = prepare_data(format="yolo", source=root, out=tmp_path / "o2", val_fraction=0.3, seed=5)
    assert [len(s.images) for s in r1.splits] == [7, 3]
    assert [s.images for s in r1.splits] == [s.images for s in r2.splits]  # seeded


def test_seeded_split_counts_and_seed():
    items = list(range(20))
    a, b, c = seeded_split(items, 0.25, 0), seeded_split(items, 0.25, 0), seeded_split(items, 0.25, 1)
    assert len(a["val"]) == 5 and sorted(a["train"] + a["val"]) == items
    assert a == b and a != c
    assert "val" not in seeded_split(items, 0.0, 0)
    with pytest.raises(CornerNetError):
        seeded_split(items, 1.5, 0)


def test_coco_converter_keeps_ids_and_reports(tmp_path: Path):
    src = tmp_path / "coco"
    for name in ("1.jpg", "2.jpg"):
        _img(src / "train2017" / name, 50, 60)
    doc = {"images": [{"id": 11, "file_name": "1.jpg", "width": 60, "height": 50},
                      {"id": 12, "file_name": "2.jpg", "width": 60, "height": 50},
                      {"id": 11, "file_name": "1.jpg", "width": 60, "height": 50},
                      {"id": 13, "file_name": "3.jpg", "width": 60, "height": 50}],
           "annotations": [{"id": 1, "image_id": 11, "category_id": 5, "bbox": [1, 2, 10, 10], "iscrowd": 0},
                           {"id": 2, "image_id": 11, "category_id": 9, "bbox": [1, 2, 30, 20], "iscrowd": 1},
                           {"id": 2, "image_id": 12, "category_id": 5, "bbox": [5, 5, -3, 4], "iscrowd": 0},
                           {"id": 4, "image_id": 12, "category_id": 77, "bbox": [5, 5, 3, 4], "iscrowd": 0}],
           "categories": [{"id": 9, "name": "b"}, {"id": 5, "name": "a"}]}
    (src / "annotations").mkdir()
    (src / "annotations" / "instances_train2017.json").write_text(json.dumps(doc))
    out = tmp_path / "out"
    report = prepare_data(format="coco", source=src, out=out)
    k = _kinds(report)
    assert set(k) == {"duplicate id", "missing image", "negative-size box", "unknown class", "crowd box"}
    assert {p.detail for p in k["duplicate id"]} == {"image id 11 seen twice", "annotation id 2"}
    assert "category id 77" in k["unknown class"][0].detail
    ds = CocoDetection.from_folder(out, "train")
    assert ds.category_ids == [5, 9] and ds.class_names == ["a", "b"] and ds.image_ids == [11, 12]
    assert ds.targets(0)[1].tolist() == [0]  # the crowd box is kept in the JSON but not a target
    saved = json.loads((out / "annotations" / "train.json").read_text())
    assert sorted(a["iscrowd"] for a in saved["annotations"]) == [0, 1]
    again = prepare_data(format="coco", source=src, out=tmp_path / "nocrowd", strict=False)  # strict=False: default
    assert _kinds(again).keys() == k.keys()
    assert json.loads((tmp_path / "nocrowd" / "annotations" / "train.json").read_text())["annotations"] == \
        saved["annotations"]
    with pytest.raises(CornerNetError, match=r"\(strict\)"):
        prepare_data(format="coco", source=src, out=tmp_path / "s", strict=True)


def test_coco_bad_json_is_one_line_error(tmp_path: Path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "train.json").write_text("{not json")
    with pytest.raises(CornerNetError, match="train.json"):
        prepare_data(format="coco", source=tmp_path, out=tmp_path / "o")


def test_resolve_split_layouts_and_errors(tmp_path: Path):
    (tmp_path / "a" / "annotations").mkdir(parents=True)
    (tmp_path / "a" / "annotations" / "train.json").write_text("{}")
    assert resolve_split(tmp_path / "a", "train") == (tmp_path / "a" / "annotations" / "train.json", tmp_path / "a")
    (tmp_path / "b" / "annotations").mkdir(parents=True)
    (tmp_path / "b" / "val2017").mkdir()
    (tmp_path / "b" / "annotations" / "instances_val2017.json").write_text("{}")
    assert resolve_split(tmp_path / "b", "val")[1] == tmp_path / "b" / "val2017"
    with pytest.raises(CornerNetError, match=r"no split 'train'; splits found: val"):
        resolve_split(tmp_path / "b", "train")
    with pytest.raises(CornerNetError, match="does not exist"):
        resolve_split(tmp_path / "nope", "train")


def test_read_image_formats(tmp_path: Path):
    from PIL import Image

    grey = (np.arange(20 * 30).reshape(20, 30) % 256).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    assert read_image(tmp_path / "g.png").shape == (20, 30, 3)
    cv2.imwrite(str(tmp_path / "d.png"), grey.astype(np.uint16) * 256)
    im16 = read_image(tmp_path / "d.png")
    assert im16.dtype == np.uint8 and (im16[..., 0] == grey).all()
    cv2.imwrite(str(tmp_path / "a.png"), np.dstack([np.zeros((20, 30, 3), np.uint8), grey]))
    assert read_image(tmp_path / "a.png").shape == (20, 30, 3)
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :5] = 255
    pil = Image.fromarray(rgb)
    exif = pil.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    pil.save(tmp_path / "r.jpg", exif=exif)
    rotated = read_image(tmp_path / "r.jpg")
    assert rotated.shape == (30, 20, 3) and rotated[:5].mean() > 200 and rotated[-5:].mean() < 50
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(CornerNetError, match="bad.jpg"):
        read_image(tmp_path / "bad.jpg")
    with pytest.raises(CornerNetError, match="missing.jpg"):
        read_image(tmp_path / "missing.jpg")


def test_bccd_report_names_both_zero_size_boxes(shared_datasets: Path, tmp_path: Path):
    report = prepare_data(format="voc", source=shared_datasets / "bccd", out=tmp_path / "bccd")
    assert sum(len(s.images) for s in report.splits) == 364
    assert {s.name: len(s.images) for s in report.splits} == {"train": 205, "val": 87, "test": 72}
    assert report.class_names == ["Platelets", "RBC", "WBC"]
    zero = [p for p in report.problems if p.kind == "zero-size box"]
    assert sorted(Path(p.file.split(" ")[0]).name for p in zero) == ["BloodImage_00338.xml", "BloodImage_00343.xml"]
    assert {p.detail for p in zero} == {"box [504, 337, 504, 337]", "box [181, 329, 181, 329]"}
    boxes = sum(sum(s.boxes_per_class.values()) for s in report.splits)
    assert boxes == 4888 - 2


def test_coco_root_works_directly(shared_datasets: Path):
    ds = CocoDetection.from_folder(shared_datasets / "coco128", "train")  # images live in val2017/
    assert len(ds) == 128 and ds.num_classes == 80 and ds[0].path.is_file()
    n_crowd = sum(a["iscrowd"] for a in ds.coco.dataset["annotations"])
    assert sum(len(ds.targets(i)[0]) for i in range(len(ds))) == 939 - n_crowd


def test_cli_prepare_data(voc: Path, tmp_path: Path):
    runner = CliRunner()
    res = runner.invoke(app, ["prepare-data", "--format", "voc", "--source", str(voc), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "zero-size box" in res.output and "bad.xml" in res.output
    res = runner.invoke(app, ["prepare-data", "--format", "voc", "--source", str(voc), "--out", str(tmp_path / "s"),
                              "--strict"])
    assert isinstance(res.exception, CornerNetError)
    res = runner.invoke(app, ["prepare-data", "--format", "synthetic", "--out", str(tmp_path / "syn"),
                              "--num-train", "3", "--num-val", "2", "--image-size", "64"])
    assert res.exit_code == 0, res.output
    assert len(CocoDetection.from_folder(tmp_path / "syn", "val")) == 2
