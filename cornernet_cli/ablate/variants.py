"""The ablation variants: each differs from the paper's CornerNet (the baseline) in one thing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cornernet_cli.errors import SettingError


@dataclass(frozen=True)
class Variant:
    name: str
    change: str  # what differs from the baseline, in words
    corner_pool: bool = True
    radius: str = "object"
    oracle: str | None = None  # evaluate the baseline with ground truth instead of training
    paper_ap: float | None = None  # the paper's COCO val AP (Hourglass-104, 250k iterations)


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("baseline", "none (corner pooling, object radius)", paper_ap=38.4),
    Variant("no-corner-pool", "corner pooling off", corner_pool=False, paper_ap=36.5),
    Variant("radius-fixed", "penalty reduction: fixed radius 2.5", radius="fixed", paper_ap=35.6),
    Variant("radius-none", "penalty reduction: none", radius="none", paper_ap=32.9),
    Variant("gt-heatmaps", "ground-truth heatmaps", oracle="heatmaps", paper_ap=73.1),
    Variant("gt-heatmaps-offsets", "ground-truth heatmaps and offsets", oracle="heatmaps+offsets",
            paper_ap=86.1),
)}

# The paper's three studies and the variants each compares (table order).
STUDIES: dict[str, tuple[str, ...]] = {
    "Corner pooling": ("no-corner-pool", "baseline"),
    "Penalty reduction": ("radius-none", "radius-fixed", "baseline"),
    "Error analysis": ("baseline", "gt-heatmaps", "gt-heatmaps-offsets"),
}

RADIUS_VARIANT = {"none": "radius-none", "fixed": "radius-fixed", "object": "baseline"}


def select_variants(*, corner_pool: bool = False, radius: Sequence[str] | None = None,
                    error_analysis: bool = False) -> list[str]:
    """Variant names for the selection flags, in run order (trained variants first, the baseline first of
    all, then the oracles). No flag selects every variant. radius: any of "none", "fixed", "object"."""
    if not corner_pool and not radius and not error_analysis:
        return list(VARIANTS)
    chosen: set[str] = set()
    if corner_pool:
        chosen |= {"baseline", "no-corner-pool"}
    for r in radius or ():
        if r not in RADIUS_VARIANT:
            raise SettingError(f"radius takes none, fixed, object (comma-separated), got {r!r}")
        chosen.add(RADIUS_VARIANT[r])
    if error_analysis:
        chosen |= {"baseline", "gt-heatmaps", "gt-heatmaps-offsets"}
    return [name for name in VARIANTS if name in chosen]


def run_order(names: Sequence[str]) -> list[str]:
    """`names` in VARIANTS' order, with the baseline first when an oracle variant (which evaluates the
    baseline's checkpoint) is among them."""
    order = [n for n in VARIANTS if n in names]
    if any(VARIANTS[n].oracle for n in order) and "baseline" not in order:
        order.insert(0, "baseline")
    return order
