"""prepare-data: convert a VOC / YOLO / COCO source into a validated dataset folder.

Output layout (what train, eval and ablate take as --data DIR):

    DIR/annotations/train.json   one COCO JSON per split that exists (train, val, test)
    DIR/annotations/val.json
    DIR/report.json              every problem found, per split counts
    DIR/images/<split>/...       only with copy_images=True

Image ``file_name`` entries are relative to DIR: a relative path to the source image (default, nothing is
copied; move DIR and the source together) or images/<split>/<name> with copy_images=True (self-contained).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cornernet_cli.atomic import write_json
from cornernet_cli.data.coco import SPLITS
from cornernet_cli.data.records import Problem, RawImage, SourceData
from cornernet_cli.data.sources import read_coco, read_voc, read_yolo
from cornernet_cli.data.synthetic import write_synthetic_dataset
from cornernet_cli.data.validate import SplitResult, validate_split
from cornernet_cli.engine.rundir import claim_output
from cornernet_cli.errors import CornerNetError, SettingError

FORMATS = ("voc", "yolo", "coco", "synthetic")


@dataclass
class PrepareReport:
    """What prepare-data did: the output folder, classes, validated splits and all problems."""

    out: Path
    format: str
    source: str
    class_names: list[str]
    splits: list[SplitResult]
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "format": self.format, "source": self.source, "classes": self.class_names,
            "splits": {s.name: {"images": len(s.images), "boxes": sum(s.boxes_per_class.values()),
                                "empty_images": s.empty_images, "crowd": s.crowd, "dropped": s.dropped,
                                "boxes_per_class": {self.class_names[k]: v
                                                    for k, v in sorted(s.boxes_per_class.items())}}
                       for s in self.splits},
            "problems": [p.__dict__ for p in self.problems],
        }


def seeded_split(images: list[RawImage], val_fraction: float, seed: int) -> dict[str, list[RawImage]]:
    """Split `images` into train / val: a seeded permutation, val gets round(n * val_fraction) images
    (at least 1 when val_fraction > 0 and n > 1). Order within each split follows the source."""
    if not 0.0 <= val_fraction < 1.0:
        raise SettingError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = len(images)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    val_idx = set(perm[:n_val].tolist())
    out = {"train": [im for i, im in enumerate(images) if i not in val_idx]}
    if n_val:
        out["val"] = [im for i, im in enumerate(images) if i in val_idx]
    return out


def _file_name(path: Path, out: Path, split: str, copy_images: bool, used: set[str]) -> str:
    if not copy_images:
        return Path(os.path.relpath(path.resolve(), out.resolve())).as_posix()
    name = path.name
    stem, k = path.stem, 1
    while name in used:
        name, k = f"{stem}_{k}{path.suffix}", k + 1
    used.add(name)
    dest = out / "images" / split / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, dest)
    return f"images/{split}/{name}"


def write_split(out: Path, result: SplitResult, class_names: list[str], category_ids: list[int], *,
                copy_images: bool, info: dict) -> Path:
    """Write DIR/annotations/<split>.json (category ids mapped back from labels); return its path."""
    used: set[str] = set()
    for image in result.images:
        image["file_name"] = _file_name(result.paths[image["id"]], out, result.name, copy_images, used)
    anns = [{**a, "category_id": category_ids[a["category_id"]]} for a in result.annotations]
    doc = {"info": info, "images": result.images, "annotations": anns,
           "categories": [{"id": cid, "name": name} for cid, name in zip(category_ids, class_names)]}
    return write_json(out / "annotations" / f"{result.name}.json", doc)


def prepare_data(*, format: str, source: str | Path, out: str | Path, val_fraction: float = 0.1, seed: int = 0,
                 strict: bool = False, copy_images: bool = False, workers: int = 4,
                 exist_ok: bool = False) -> PrepareReport:
    """Read `source` in `format` (voc | yolo | coco), validate it, write the dataset folder `out`.

    Splits come from the source (VOC ImageSets/Main, YOLO train/valid/test folders, COCO files); a source
    without splits is divided by `val_fraction` with `seed`. With `strict`, any problem other than a crowd
    box raises CornerNetError (and nothing is written). Returns the report (also written to out/report.json).

    report.json records the job (format, source, split and copy settings): an `out` holding a dataset
    prepared by another job is refused unless `exist_ok` (then split files this job does not write are
    removed, so no stale split is left); the same job writes the same files again. `out` is locked meanwhile.
    """
    readers = {"voc": read_voc, "yolo": read_yolo, "coco": read_coco}
    if format not in readers:
        raise SettingError(f"unknown format {format!r}; choose one of: {', '.join(FORMATS)}")
    source, out = Path(source), Path(out)
    if not source.exists():
        raise CornerNetError(f"source {source} does not exist", params=("source",))
    job = {"command": "prepare-data", "format": format, "source": str(source.resolve()), "val_fraction": val_fraction,
           "seed": seed, "strict": strict, "copy_images": copy_images}
    with claim_output(out, job=job, record_file=out / "report.json", exist_ok=exist_ok):
        data: SourceData = readers[format](source)
        splits = dict(data.splits)
        if data.unsplit is not None:
            for name, images in seeded_split(data.unsplit, val_fraction, seed).items():
                splits[name] = images
        problems = list(data.problems)
        results = []
        for name in [s for s in ("train", "val", "test") if s in splits]:
            result = validate_split(name, splits[name], len(data.class_names), workers=workers)
            results.append(result)
            problems.extend(result.problems)
        if not any(r.images for r in results):
            raise CornerNetError(f"no usable images in {source} ({len(problems)} problems)")
        report = PrepareReport(out=out, format=format, source=str(source), class_names=data.class_names,
                               splits=results, problems=problems)
        errors = [p for p in problems if p.is_error]
        if strict and errors:
            first = "; ".join(f"{p.kind}: {p.file}: {p.detail}" for p in errors[:3])
            raise CornerNetError(f"{len(errors)} problems in {source} (strict), first: {first}", params=("strict",))
        info = {"description": f"cornernet prepare-data --format {format}", "source": str(source),
                "val_fraction": val_fraction, "seed": seed}
        for result in results:
            write_split(out, result, data.class_names, data.category_ids, copy_images=copy_images, info=info)
        _finish(out, report, job)
    return report


def _finish(out: Path, report: PrepareReport, job: dict) -> None:
    """Remove split files that this job did not write (left by a replaced job), then write report.json."""
    written = {s.name for s in report.splits}
    for split in SPLITS:
        if split not in written:
            (out / "annotations" / f"{split}.json").unlink(missing_ok=True)
    write_json(out / "report.json", {**report.to_dict(), "job": job}, indent=1)


def synthetic_report(out: str | Path, *, num_train: int = 200, num_val: int = 50, image_size: int = 256,
                     num_classes: int = 4, seed: int = 0, sizes: tuple[float, float] = (20, 120),
                     max_iou: float = 0.4, exist_ok: bool = False) -> PrepareReport:
    """Generate the synthetic shapes dataset into `out` (see data/synthetic.py) and summarise it. `out` is
    claimed as in `prepare_data` (another job's dataset there: refused unless `exist_ok`)."""
    out = Path(out)
    job = {"command": "prepare-data", "format": "synthetic", "num_train": num_train, "num_val": num_val,
           "image_size": image_size, "num_classes": num_classes, "seed": seed, "sizes": list(sizes),
           "max_iou": max_iou}
    with claim_output(out, job=job, record_file=out / "report.json", exist_ok=exist_ok):
        return _synthetic_into(out, job, num_train=num_train, num_val=num_val, image_size=image_size,
                               num_classes=num_classes, seed=seed, sizes=sizes, max_iou=max_iou)


def _synthetic_into(out: Path, job: dict, **settings) -> PrepareReport:
    docs = write_synthetic_dataset(out, **settings)
    seed = settings["seed"]
    names = next(iter(docs.values()))["categories"] if docs else []
    results = []
    for split, doc in docs.items():
        r = SplitResult(name=split, images=doc["images"], annotations=doc["annotations"])
        for a in doc["annotations"]:
            r.boxes_per_class[a["category_id"] - 1] = r.boxes_per_class.get(a["category_id"] - 1, 0) + 1
        r.empty_images = len({im["id"] for im in doc["images"]} - {a["image_id"] for a in doc["annotations"]})
        results.append(r)
    report = PrepareReport(out=out, format="synthetic", source=f"seed {seed}",
                           class_names=[c["name"] for c in names], splits=results)
    _finish(out, report, job)
    return report
