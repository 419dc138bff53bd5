"""Readers for prepare-data's source formats: Pascal VOC XML, YOLO txt, COCO JSON.

Each reader returns a SourceData: class names, images with their raw boxes per split, and the problems met
while parsing (malformed files, unknown classes). Pixels are checked later by the validator.
Box conventions: VOC xmin..xmax and COCO x, y, w, h are taken as continuous pixel coordinates
(x1 = xmin, x2 = xmax; x2 = x + w); YOLO centre / size fractions are scaled by the decoded image size.
Text files (lists, labels, class names, YAML, JSON) are read as UTF-8 with or without the byte-order mark
that Windows editors write.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from cornernet_cli.data.coco import available_splits, contained_path, resolve_split
from cornernet_cli.data.image_io import IMAGE_SUFFIXES
from cornernet_cli.data.records import Problem, RawBox, RawImage, SourceData
from cornernet_cli.errors import CornerNetError

SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


# ---- Pascal VOC -------------------------------------------------------------------------------------------


def _voc_root(source: Path) -> Path:
    if (source / "Annotations").is_dir():
        return source
    subs = [d for d in sorted(source.iterdir()) if (d / "Annotations").is_dir()] if source.is_dir() else []
    if len(subs) == 1:
        return subs[0]
    raise CornerNetError(f"{source} is not a Pascal VOC folder (no Annotations/ in it or in one sub-folder)")


def _voc_image(root: Path, stem: str, filename: str | None) -> Path:
    # only a name inside JPEGImages/ is used ("../x" or "/x" falls back to the XML's stem)
    named = contained_path(root / "JPEGImages", filename.strip()) if filename else None
    if named is not None and named.exists():
        return named
    for suffix in IMAGE_SUFFIXES:
        p = root / "JPEGImages" / f"{stem}{suffix}"
        if p.exists():
            return p
    return named or root / "JPEGImages" / f"{stem}.jpg"


def _parse_voc_xml(path: Path, root: Path) -> tuple[RawImage | None, list[tuple[str, RawBox]], str | None]:
    """-> (image, [(class name, box)], error message or None)."""
    try:
        tree = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        return None, [], f"not valid XML: {e}"
    image = RawImage(path=_voc_image(root, path.stem, tree.findtext("filename")), where=str(path))
    try:
        size = tree.find("size")
        if size is not None:
            w, h = int(float(size.findtext("width"))), int(float(size.findtext("height")))
            if w > 0 and h > 0:
                image.declared_size = (h, w)
    except (TypeError, ValueError):
        pass
    boxes = []
    for i, obj in enumerate(tree.iter("object")):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        try:
            vals = tuple(float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            boxes.append((name, RawBox(-1, (math.nan,) * 4, f"{path} object {i + 1}")))
            continue
        boxes.append((name, RawBox(-1, vals, f"{path} object {i + 1} ({name})")))
    return image, boxes, None


def read_voc(source: Path) -> SourceData:
    """A VOC folder (Annotations/, JPEGImages/, optional ImageSets/Main/{train,val,test,trainval}.txt).

    Class names are the sorted set of object names; category ids 1..K.
    """
    root = _voc_root(Path(source))
    problems: list[Problem] = []
    parsed: dict[str, tuple[RawImage, list[tuple[str, RawBox]]]] = {}
    for xml in sorted((root / "Annotations").glob("*.xml")):
        image, boxes, err = _parse_voc_xml(xml, root)
        if err:
            problems.append(Problem("", "malformed file", str(xml), err, "image skipped"))
        else:
            parsed[xml.stem] = (image, boxes)
    if not parsed and not problems:
        raise CornerNetError(f"no annotation files (*.xml) in {root / 'Annotations'}")
    names = sorted({n for _, boxes in parsed.values() for n, b in boxes if n and not math.isnan(b.box[0])})
    index = {n: i for i, n in enumerate(names)}
    for image, boxes in parsed.values():
        for name, box in boxes:
            if math.isnan(box.box[0]):
                problems.append(Problem("", "malformed file", box.where, "bndbox missing or not numbers",
                                        "box dropped"))
                continue
            if name not in index:
                problems.append(Problem("", "unknown class", box.where, f"class name {name!r}", "box dropped"))
                continue
            box.label = index[name]
            image.boxes.append(box)

    sets = root / "ImageSets" / "Main"
    lists = {s: sets / f"{s}.txt" for s in ("train", "val", "test", "trainval")}
    data = SourceData(class_names=names, category_ids=list(range(1, len(names) + 1)), splits={}, problems=problems)

    def images_of(list_file: Path, split: str) -> list[RawImage]:
        out = []
        for line in list_file.read_text(encoding="utf-8-sig").split("\n"):
            stem = line.strip().split(" ")[0] if line.strip() else ""
            if not stem:
                continue
            if stem in parsed:
                out.append(parsed[stem][0])
            elif not any(p.file.endswith(f"{stem}.xml") for p in problems):
                problems.append(Problem(split, "missing image", str(list_file), f"{stem}: no Annotations/{stem}.xml",
                                        "image skipped"))
        return out

    if lists["train"].is_file() or lists["val"].is_file():
        for s in ("train", "val", "test"):
            if lists[s].is_file():
                data.splits[s] = images_of(lists[s], s)
    elif lists["trainval"].is_file():
        data.unsplit = images_of(lists["trainval"], "trainval")
        if lists["test"].is_file():
            data.splits["test"] = images_of(lists["test"], "test")
    else:
        data.unsplit = [image for image, _ in parsed.values()]
    return data


# ---- YOLO -------------------------------------------------------------------------------------------------


def _read_class_names(root: Path) -> list[str]:
    for yml in [root / "data.yaml", root / "dataset.yaml", *sorted(root.glob("*.yaml")), *sorted(root.glob("*.yml"))]:
        if yml.is_file():
            names = _yaml_names(yml)
            if names:
                return names
    for txt in (root / "classes.txt", root / "labels" / "classes.txt", root / "obj.names", root / "classes.names"):
        if txt.is_file():
            return [ln.strip() for ln in txt.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    raise CornerNetError(f"YOLO folder {root}: no class names (expected data.yaml with `names:` or classes.txt)")


def _yaml_names(path: Path) -> list[str]:
    try:
        import yaml

        doc = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except ImportError:  # PyYAML is optional: read the common `names: [a, b]` form by hand
        doc = {}
        for line in path.read_text(encoding="utf-8-sig").splitlines():
            if line.startswith("names:") and "[" in line:
                doc["names"] = [n.strip().strip("'\"") for n in line.split("[", 1)[1].rsplit("]", 1)[0].split(",")]
    except Exception as e:
        raise CornerNetError(f"cannot parse {path}: {e}") from None
    names = doc.get("names") if isinstance(doc, dict) else None
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names, key=int)]
    return [str(n) for n in names] if isinstance(names, list) else []


def _yolo_labels_path(image: Path, images_dir: Path, labels_dir: Path) -> Path:
    return (labels_dir / image.relative_to(images_dir)).with_suffix(".txt")


def _read_yolo_dir(images_dir: Path, labels_dir: Path, num_classes: int, split: str,
                   problems: list[Problem]) -> list[RawImage]:
    images = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    seen_labels = set()
    out = []
    for img in images:
        lbl = _yolo_labels_path(img, images_dir, labels_dir)
        seen_labels.add(lbl)
        raw = RawImage(path=img, where=str(lbl))
        if lbl.is_file():
            for n, line in enumerate(lbl.read_text(encoding="utf-8-sig").splitlines(), start=1):
                if not line.strip():
                    continue
                where = f"{lbl}:{n}"
                parts = line.split()
                try:
                    vals = [float(v) for v in parts]
                except ValueError:
                    problems.append(Problem(split, "malformed file", where, f"not numbers: {line.strip()!r}",
                                            "box dropped"))
                    continue
                if len(vals) == 5:
                    cx, cy, w, h = vals[1:]
                    box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                elif len(vals) >= 7 and len(vals) % 2 == 1:  # segment polygon: class x1 y1 x2 y2 ...
                    xs, ys = vals[1::2], vals[2::2]
                    box = (min(xs), min(ys), max(xs), max(ys))
                else:
                    problems.append(Problem(split, "malformed file", where,
                                            f"{len(vals)} numbers, expected 5 (class cx cy w h): {line.strip()!r}",
                                            "box dropped"))
                    continue
                cls = vals[0]
                if cls != int(cls) or not 0 <= cls < num_classes:
                    problems.append(Problem(split, "unknown class", where,
                                            f"class id {parts[0]} not in 0..{num_classes - 1}", "box dropped"))
                    continue
                raw.boxes.append(RawBox(int(cls), box, where, normalized=True))
        out.append(raw)
    for lbl in sorted(labels_dir.rglob("*.txt")) if labels_dir.is_dir() else []:
        if lbl not in seen_labels and lbl.name != "classes.txt":
            problems.append(Problem(split, "missing image", str(lbl), "label file has no image", "labels skipped"))
    return out


def read_yolo(source: Path) -> SourceData:
    """A YOLO folder: {train,valid,test}/{images,labels}/ (Roboflow), images/{train,val}/ + labels/{train,val}/
    (Ultralytics) or a flat images/ + labels/ (no split). Class names from data.yaml or classes.txt;
    category ids 1..K in that order."""
    root = Path(source)
    if not root.is_dir():
        raise CornerNetError(f"YOLO source {root} is not a folder")
    names = _read_class_names(root)
    data = SourceData(class_names=names, category_ids=list(range(1, len(names) + 1)), splits={})
    for name, split in SPLIT_ALIASES.items():
        for images_dir, labels_dir in ((root / name / "images", root / name / "labels"),
                                       (root / "images" / name, root / "labels" / name)):
            if images_dir.is_dir() and split not in data.splits:
                data.splits[split] = _read_yolo_dir(images_dir, labels_dir, len(names), split, data.problems)
    if not data.splits:
        if not (root / "images").is_dir():
            raise CornerNetError(f"YOLO source {root}: no train/valid/test folders and no images/ folder")
        data.unsplit = _read_yolo_dir(root / "images", root / "labels", len(names), "", data.problems)
    return data


# ---- COCO -------------------------------------------------------------------------------------------------


def _read_coco_json(ann_path: Path, image_root: Path, split: str, data: SourceData | None) -> SourceData:
    try:
        doc = json.loads(Path(ann_path).read_text(encoding="utf-8-sig"))
        cats = sorted(doc["categories"], key=lambda c: int(c["id"]))
        images, anns = list(doc["images"]), list(doc.get("annotations") or [])
        cat_names, cat_ids = [str(c["name"]) for c in cats], [int(c["id"]) for c in cats]
    except RecursionError:
        raise CornerNetError(f"cannot read COCO annotations {ann_path}: JSON nested too deeply") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CornerNetError(f"cannot read COCO annotations {ann_path}: {type(e).__name__}: {e}") from None
    if data is None:
        data = SourceData(class_names=cat_names, category_ids=cat_ids, splits={})
    elif [int(c["id"]) for c in cats] != data.category_ids:
        raise CornerNetError(f"{ann_path}: categories differ from the other splits' ({len(cats)} vs "
                             f"{len(data.category_ids)} categories)")
    label_of = {cid: i for i, cid in enumerate(data.category_ids)}
    by_id: dict[int, RawImage] = {}
    refused: set[int] = set()
    out = []
    for n, info in enumerate(images):
        try:
            name, image_id = info["file_name"], int(info["id"])
            declared = (int(info.get("height") or 0), int(info.get("width") or 0))
        except (KeyError, TypeError, ValueError, AttributeError):
            data.problems.append(Problem(split, "malformed file", f"{ann_path} image entry {n + 1}",
                                         f"{str(info)[:80]} (needs file_name and an integer id)", "image skipped"))
            continue
        path = contained_path(image_root, name)
        if path is None:
            data.problems.append(Problem(split, "path outside dataset root", f"{ann_path} image {image_id}",
                                         f"file_name {name!r} is not a relative path inside {image_root}",
                                         "image and its boxes skipped"))
            refused.add(image_id)
            continue
        raw = RawImage(path=path, where=str(ann_path), image_id=image_id, declared_size=declared)
        if raw.declared_size[0] <= 0 or raw.declared_size[1] <= 0:
            raw.declared_size = None
        out.append(raw)
        by_id.setdefault(raw.image_id, raw)
    for ann in anns:
        if not isinstance(ann, dict):
            data.problems.append(Problem(split, "malformed file", str(ann_path), f"annotation {str(ann)[:80]}",
                                         "skipped"))
            continue
        where = f"{ann_path} annotation {ann.get('id')} (image {ann.get('image_id')})"
        img = by_id.get(ann.get("image_id"))
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            data.problems.append(Problem(split, "malformed file", where, f"bbox {ann.get('bbox')!r}", "box dropped"))
            continue
        if img is None and ann.get("image_id") in refused:
            continue
        if img is None:
            data.problems.append(Problem(split, "missing image", where, f"image id {ann.get('image_id')} not in images",
                                         "box dropped"))
            continue
        label = label_of.get(ann.get("category_id"), -1)
        if label < 0:
            data.problems.append(Problem(split, "unknown class", where, f"category id {ann.get('category_id')}",
                                         "box dropped"))
            continue
        img.boxes.append(RawBox(label, (x, y, x + w, y + h), where, iscrowd=int(ann.get("iscrowd", 0)),
                                source_id=ann.get("id")))
    data.splits[split] = out
    return data


def read_coco(source: Path) -> SourceData:
    """A COCO root (annotations/instances_{split}2017.json + {split}2017/), a prepare-data folder, or one JSON file
    (images relative to its folder; treated as a source without split). Image ids and category ids are kept."""
    source = Path(source)
    if source.is_file():
        data = _read_coco_json(source, source.parent, "all", None)
        data.unsplit = data.splits.pop("all")
        return data
    splits = [s for s in available_splits(source) if s in ("train", "val", "test")]
    if not splits:
        resolve_split(source, "train")  # raises the standard "no split" error
    data = None
    for split in splits:
        ann, root = resolve_split(source, split)
        data = _read_coco_json(ann, root, split, data)
    return data
