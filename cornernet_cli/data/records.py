"""Plain records shared by the source readers, the validator and the report of prepare-data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RawBox:
    """One box as read from a source file, before validation.

    label: contiguous class index in [0, K), or -1 when the source named an unknown class.
    box: x1, y1, x2, y2 in image pixels (continuous coordinates), or in [0, 1] image fractions when
    `normalized` (YOLO) - the validator multiplies by the decoded image's width and height.
    where: the source file (and line) the box came from, for the problem list.
    """

    label: int
    box: tuple[float, float, float, float]
    where: str
    normalized: bool = False
    iscrowd: int = 0
    source_id: int | None = None


@dataclass
class RawImage:
    """One image as read from a source: its file, declared size (height, width) if the source has one,
    the source's image id if it has one, and its boxes."""

    path: Path
    where: str
    boxes: list[RawBox] = field(default_factory=list)
    declared_size: tuple[int, int] | None = None
    image_id: int | None = None


@dataclass(frozen=True)
class Problem:
    """One finding of the validator: `kind` (see KINDS), the file, the offending value and what was done."""

    split: str
    kind: str
    file: str
    detail: str
    action: str

    @property
    def is_error(self) -> bool:
        """Everything is an error under --strict except crowd boxes, which are valid COCO (kept, not trained on)."""
        return self.kind != "crowd box"


KINDS = (
    "malformed file",      # bad XML / JSON, a label line that is not 5 numbers, a value that is not a number
    "missing image",       # the annotation names an image file that does not exist
    "path outside dataset root",  # an image path that is absolute or leads out of the source's image folder
    "unreadable image",    # the file exists but does not decode
    "size mismatch",       # the annotation's width/height disagree with the decoded image
    "zero-size box",       # x2 == x1 or y2 == y1
    "negative-size box",   # x2 < x1 or y2 < y1
    "box outside image",   # clipped to the image (dropped when nothing is left)
    "unknown class",       # a class id out of range / a category id not in the category list
    "duplicate id",        # an image id (or file) or annotation id seen twice
    "crowd box",           # COCO iscrowd=1: kept in the JSON, ignored for training targets
)


@dataclass
class SourceData:
    """Everything a reader found: class names (contiguous order), their category ids for the output JSON,
    the images per split (None for a source without splits) and the problems met while parsing."""

    class_names: list[str]
    category_ids: list[int]
    splits: dict[str, list[RawImage]]
    problems: list[Problem] = field(default_factory=list)
    unsplit: list[RawImage] | None = None
