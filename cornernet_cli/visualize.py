"""`cornernet visualize-heatmaps`: one PNG showing what the network sees in one image.

Panels (2 x 4, all in image pixels; output-map cells are 4 input pixels, drawn as blocks):
decoded boxes with their paired corners joined | top-left heatmap (max over classes) | bottom-right heatmap |
embeddings of the top corners as colours | offsets of the top corners (arrows, magnified) | the strongest
classes (or the `classes` asked for), top-left in red and bottom-right in blue | for a model with a centre head,
its centre heatmap (in place of the last class panel) | with `gt`, the training targets for the same image at
the same geometry: gaussians with their radii as circles.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cornernet_cli import detect as detect_module
from cornernet_cli.data.image_io import read_image
from cornernet_cli.data.letterbox import Letterbox
from cornernet_cli.decode import topk_corners
from cornernet_cli.engine import checkpoint as checkpoint_io
from cornernet_cli.engine.device import resolve_device
from cornernet_cli.engine.inference import heads_and_detections
from cornernet_cli.errors import CornerNetError
from cornernet_cli.targets import encode_targets, gaussian_radius

STRIDE_NOTE = "one block = one output cell"


def cell_lookup(lb: Letterbox) -> tuple[np.ndarray, np.ndarray]:
    """For every image row / column, the output-map row / column that covers its centre.

    Returns (rows [H] int, cols [W] int) so that `heat[rows][:, cols]` is `heat` [h, w] shown in image pixels.
    """
    (in_h, in_w), (out_h, out_w) = lb.input_size, lb.output_size
    height, width = lb.image_size
    ys = ((np.arange(height) + 0.5) * lb.scale[1] + lb.offset[1]) * out_h / in_h
    xs = ((np.arange(width) + 0.5) * lb.scale[0] + lb.offset[0]) * out_w / in_w
    return np.clip(ys.astype(int), 0, out_h - 1), np.clip(xs.astype(int), 0, out_w - 1)


def output_points_to_image(lb: Letterbox, xy: np.ndarray) -> np.ndarray:
    """[N, 2] points (x, y) in output-map coordinates -> image pixels."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return lb.output_to_image(np.concatenate([xy, xy], axis=1))[:, :2]


def top_corners(heat: torch.Tensor, emb: torch.Tensor, off: torch.Tensor, *, k: int) -> dict[str, np.ndarray]:
    """The k strongest local maxima of one image's heatmap logits [C, h, w] (3x3 window, as decoding does).

    Returns score [k], cls [k], cell [k, 2] (x, y integer cell), emb [k], off [k, 2] (x, y output pixels).
    """
    c, h, w = heat.shape
    score, index = topk_corners(heat[None], k=min(k, c * h * w), kernel=3)
    score, index = score[0], index[0]
    cell = index % (h * w)
    ys, xs = cell // w, cell % w
    return {"score": score.numpy(), "cls": (index // (h * w)).numpy(),
            "cell": torch.stack([xs, ys], 1).numpy(), "emb": emb[0].reshape(-1)[cell].numpy(),
            "off": off.reshape(2, -1)[:, cell].T.numpy()}


def find_ground_truth(annotations: str | Path, image_path: Path) -> tuple[np.ndarray, list[str]]:
    """Boxes [N, 4] (x1, y1, x2, y2 pixels) and class names of `image_path` in a COCO JSON file or in any
    annotations/*.json of a dataset folder (the entry whose file_name shares the most trailing path parts)."""
    annotations = Path(annotations)
    files = sorted((annotations / "annotations").glob("*.json")) if annotations.is_dir() else [annotations]
    if not files or not all(f.is_file() for f in files):
        raise CornerNetError(f"gt {annotations}: no COCO annotation file there", params=("gt",))
    target = image_path.resolve().parts
    best: tuple[int, dict, dict] | None = None
    for f in files:
        try:
            doc = json.loads(f.read_text())
        except RecursionError:
            raise CornerNetError(f"gt {f} is not readable JSON: nested too deeply", params=("gt",)) from None
        except (OSError, ValueError) as e:
            raise CornerNetError(f"gt {f} is not readable JSON: {e}", params=("gt",)) from None
        for im in doc.get("images", []) if isinstance(doc, dict) else []:
            parts = Path(im.get("file_name", "")).parts
            common = 0  # how many trailing path parts agree (images/val/1.jpg beats images/train/1.jpg)
            while common < min(len(parts), len(target)) and parts[-1 - common] == target[-1 - common]:
                common += 1
            if common and (best is None or common > best[0]):
                best = (common, im, doc)
    if best is None:
        raise CornerNetError(f"gt {annotations}: no image named {image_path.name} in "
                             f"{', '.join(map(str, files))}", params=("gt",))
    _, im, doc = best
    try:
        cats = {c["id"]: c["name"] for c in doc.get("categories", [])}
        anns = [a for a in doc.get("annotations", []) if a.get("image_id") == im["id"]
                and not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0]
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns], dtype=np.float64).reshape(-1, 4)
        names = [cats.get(a["category_id"], str(a["category_id"])) for a in anns]
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise CornerNetError(f"gt: malformed categories or annotations for {im.get('file_name')!r} in "
                             f"{annotations}: {type(e).__name__}: {e}", params=("gt",)) from None
    if not np.isfinite(boxes).all():
        raise CornerNetError(f"gt: a box of {im.get('file_name')!r} in {annotations} is not finite",
                             params=("gt",))
    return boxes, names


def _overlay(grey: np.ndarray, red: np.ndarray, blue: np.ndarray | None = None) -> np.ndarray:
    """Dimmed grey image [H, W] in 0..1 with `red` (and `blue`) maps in 0..1 added as colour."""
    rgb = np.repeat(grey[:, :, None] * 0.45, 3, axis=2)
    rgb[:, :, 0] += 0.55 * red
    rgb[:, :, 1] += 0.15 * red
    if blue is not None:
        rgb[:, :, 2] += 0.55 * blue
        rgb[:, :, 1] += 0.3 * blue
    return np.clip(rgb, 0, 1)


@dataclass(frozen=True)
class _View:
    """One image as the panels draw it: `rgb` [H, W, 3] and `grey` [H, W] in 0..1, and the letterbox that
    maps it to the network's input and output map."""

    rgb: np.ndarray
    grey: np.ndarray
    lb: Letterbox

    @property
    def extent(self) -> tuple[int, int, int, int]:
        """imshow's extent: image pixels, y down."""
        height, width = self.grey.shape
        return 0, width, height, 0

    def show(self, m: torch.Tensor | np.ndarray) -> np.ndarray:
        """An output map [h, w] resampled to image pixels [H, W] (each cell a block)."""
        rows, cols = cell_lookup(self.lb)
        return np.asarray(m)[rows][:, cols]

    def to_px(self, v: float) -> float:
        """A length in output-map pixels -> image pixels."""
        return v * self.lb.input_size[1] / self.lb.output_size[1] / self.lb.scale[0]


def _draw_boxes(ax, view: _View, dets: np.ndarray, names: Sequence[str], *, threshold: float) -> None:
    """Decoded boxes `dets` [N, 6] (x1, y1, x2, y2 image pixels, score, class) above `threshold` (else the
    best five), with their paired corners joined."""
    # matplotlib stays lazy here and below: pyplot takes 0.4 s to import (python -X importtime)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    ax.imshow(view.rgb, extent=view.extent)
    shown = dets[dets[:, 4] >= threshold]
    note = f"score >= {threshold}"
    if len(shown) == 0:
        shown, note = dets[:5], f"none >= {threshold}: best {min(5, len(dets))} shown"
    cmap = plt.get_cmap("tab10")
    for x1, y1, x2, y2, s, c in shown[:30]:
        col = cmap(int(c) % 10)
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=2, ec=col))
        ax.plot([x1, x2], [y1, y2], ls="--", lw=1.2, color=col)
        ax.plot([x1], [y1], "o", ms=8, mfc=col, mec="white")
        ax.plot([x2], [y2], "s", ms=8, mfc=col, mec="white")
        ax.text(x1, y1 - 3, f"{names[int(c)]} {s:.2f}", color="white", fontsize=9,
                bbox={"facecolor": col, "alpha": 0.8, "pad": 1, "lw": 0})
    ax.set_title(f"decoded boxes ({note})\no top-left, \u25a1 bottom-right, dashed line joins the pair", fontsize=10)


def _draw_heatmap(fig, ax, view: _View, p: torch.Tensor, *, title: str, cmap: str = "inferno") -> None:
    """Heatmap probabilities `p` [C, h, w], max over classes, over the grey image."""
    ax.imshow(view.grey, cmap="gray", extent=view.extent, vmin=0, vmax=1)
    im = ax.imshow(view.show(p.amax(dim=0)), cmap=cmap, alpha=0.65, vmin=0, vmax=1, extent=view.extent)
    fig.colorbar(im, ax=ax, fraction=0.035, pad=0.01)
    ax.set_title(f"{title}\nmax over {p.shape[0]} classes (peak {float(p.max()):.2f})", fontsize=10)


def _draw_embeddings(fig, ax, view: _View, tl: dict[str, np.ndarray], br: dict[str, np.ndarray], *,
                     top_k: int) -> None:
    """The embeddings of the top corners (`top_corners`) as colours at the corners' image positions."""
    ax.imshow(view.grey, cmap="gray", extent=view.extent, vmin=0, vmax=1.6)
    tl_xy = output_points_to_image(view.lb, tl["cell"] + tl["off"])
    br_xy = output_points_to_image(view.lb, br["cell"] + br["off"])
    all_emb = np.concatenate([tl["emb"], br["emb"]])
    lo, hi = float(all_emb.min()), float(all_emb.max())
    if hi - lo < 1e-6:
        lo, hi = lo - 0.5, hi + 0.5
    sc = ax.scatter(tl_xy[:, 0], tl_xy[:, 1], c=tl["emb"], cmap="viridis", vmin=lo, vmax=hi, marker="o", s=70,
                    edgecolors="white", linewidths=1)
    ax.scatter(br_xy[:, 0], br_xy[:, 1], c=br["emb"], cmap="viridis", vmin=lo, vmax=hi, marker="s", s=70,
               edgecolors="white", linewidths=1)
    fig.colorbar(sc, ax=ax, fraction=0.035, pad=0.01, label="embedding")
    ax.set_title(f"embeddings of the top {top_k} corners per type (o top-left, \u25a1 bottom-right)\n"
                 "a pair needs |difference| <= 0.5", fontsize=10)


def _draw_offsets(ax, view: _View, tl: dict[str, np.ndarray], br: dict[str, np.ndarray]) -> None:
    """The offsets of the top corners: arrows from each cell's origin to the predicted corner, magnified."""
    ax.imshow(view.rgb * 0.6, extent=view.extent)
    magnify = 4.0
    for corners, colour, label in ((tl, "red", "top-left"), (br, "deepskyblue", "bottom-right")):
        base = output_points_to_image(view.lb, corners["cell"].astype(np.float64))
        tip = output_points_to_image(view.lb, corners["cell"] + corners["off"])
        d = (tip - base) * magnify
        ax.quiver(base[:, 0], base[:, 1], d[:, 0], d[:, 1], angles="xy", scale_units="xy", scale=1, color=colour,
                  width=0.004, label=label)
        ax.plot(base[:, 0], base[:, 1], ".", color=colour, ms=4)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"offsets at the top corners\ncell origin -> predicted corner (arrows x{magnify:g})", fontsize=10)


def _draw_classes(fig, panels: list, view: _View, tl_p: torch.Tensor, br_p: torch.Tensor, ct_p: torch.Tensor | None,
                  *, names: Sequence[str], chosen: Sequence[str]) -> None:
    """One panel per `chosen` class (top-left [C, h, w] probabilities in red, bottom-right in blue); the centre
    heatmap `ct_p` [C, h, w], when the model has one, takes the last panel. Panels left over are blank."""
    panels = list(panels)
    if ct_p is not None:
        _draw_heatmap(fig, panels.pop(), view, ct_p, title="centre heatmap (--centre-head)", cmap="viridis")
    for ax, name in zip(panels, chosen):
        i = names.index(name)
        ax.imshow(_overlay(view.grey, view.show(tl_p[i]), view.show(br_p[i])), extent=view.extent)
        ax.set_title(f"class {name!r}\ntop-left red (max {float(tl_p[i].max()):.2f}), "
                     f"bottom-right blue (max {float(br_p[i].max()):.2f})", fontsize=10)
    for ax in panels[len(chosen):]:
        ax.axis("off")


def _draw_targets(ax, view: _View, gt_boxes: np.ndarray, gt_names: Sequence[str], names: Sequence[str]) -> None:
    """The training targets of `gt_boxes` [N, 4] (x1, y1, x2, y2 image pixels) at this image's geometry:
    gaussians, their radii as circles, the boxes dotted."""
    from matplotlib.patches import Circle, Rectangle  # lazy: matplotlib (see _draw_boxes)

    lb = view.lb
    labels = np.array([names.index(n) for n in gt_names], dtype=np.int64)
    boxes_in = lb.image_to_input(gt_boxes) if len(gt_boxes) else np.zeros((0, 4))
    t = encode_targets(boxes_in, labels, len(names), lb.input_size, lb.output_size)
    ax.imshow(_overlay(view.grey, view.show(t["tl_heat"].max(axis=0)), view.show(t["br_heat"].max(axis=0))),
              extent=view.extent)
    (in_h, in_w), (out_h, out_w) = lb.input_size, lb.output_size
    for j, row in enumerate(t["keep"]):
        x1, y1, x2, y2 = gt_boxes[row]
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=0.8, ec="white", ls=":"))
        bh = math.ceil((y2 - y1) * lb.scale[1] * out_h / in_h)
        bw = math.ceil((x2 - x1) * lb.scale[0] * out_w / in_w)
        r = int(gaussian_radius(bh, bw))
        for cell, colour in ((t["tl_index"][j], "red"), (t["br_index"][j], "deepskyblue")):
            cx, cy = cell % out_w + 0.5, cell // out_w + 0.5
            centre = output_points_to_image(lb, np.array([[cx, cy]]))[0]
            ax.add_patch(Circle(tuple(centre), radius=max(view.to_px(r), 1.0), fill=False, ec=colour, lw=1))
    ax.set_title(f"training targets ({len(t['keep'])} objects): gaussians, circles = radius\n"
                 "red top-left, blue bottom-right, dotted: ground-truth box", fontsize=10)


def visualize_heatmaps(
    image_path: str | Path,
    *,
    checkpoint: str | Path | None = None,
    out: str | Path | None = None,
    classes: Sequence[str] | None = None,
    gt: str | Path | None = None,
    device: str = "cpu",
    scale: float | None = None,
    top_k: int = 20,
    threshold: float = 0.3,
    runs_dir: str | Path = "runs",
    offline: bool = False,
) -> Path:
    """Render the heatmaps, embeddings, offsets and decoded boxes of `checkpoint` on one image to a PNG.

    checkpoint: a checkpoint file, original / mmdetection weights or a named model (`cornernet_cli.hub`);
    default the newest runs/*/best.safetensors. classes: class names for the per-class panels (default: the
    two or three strongest). gt: COCO JSON (or dataset folder) holding the image, to show the training
    targets. scale: test scale (None: the one the checkpoint was trained for). top_k: corners per type shown
    in the embedding / offset panels. threshold: boxes above it are drawn (the best five when none is).
    offline: never download a named model. Returns the PNG path (default <image stem>_heatmaps.png next to
    the working directory).
    """
    import matplotlib  # lazy: matplotlib (see _draw_boxes)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image_path = Path(image_path)
    device = resolve_device(device)
    ckpt = detect_module.find_checkpoint(checkpoint, offline=offline, runs_dir=runs_dir)
    model, meta = checkpoint_io.load_model(ckpt, device=device)
    scale = checkpoint_io.test_scales(meta, (scale,) if scale else None)[0]
    names: list[str] = meta["class_names"]
    for c in classes or []:
        if c not in names:
            raise CornerNetError(f"classes {c!r} is not a class of {ckpt} ({', '.join(names)})", params=("classes",))
    image = read_image(image_path)
    gt_boxes, gt_names = find_ground_truth(gt, image_path) if gt is not None else (None, None)
    unknown = sorted(set(gt_names or []) - set(names))
    if unknown:
        raise CornerNetError(f"gt classes {unknown} are not classes of {ckpt} ({', '.join(names)})", params=("gt",))

    dets, outputs, lb = heads_and_detections(model, image, scale=scale, device=device)
    rgb = image[:, :, ::-1].astype(np.float32) / 255.0
    view = _View(rgb=rgb, grey=rgb.mean(axis=2), lb=lb)
    tl_p, br_p = torch.sigmoid(outputs.tl_heat[0]), torch.sigmoid(outputs.br_heat[0])
    strength = torch.maximum(tl_p.amax(dim=(1, 2)), br_p.amax(dim=(1, 2)))
    chosen = list(classes) if classes else [names[i] for i in torch.argsort(strength, descending=True)[:3].tolist()]
    ct_p = torch.sigmoid(outputs.ct_heat[0]) if outputs.ct_heat is not None else None

    height, width = image.shape[:2]
    fig, axes = plt.subplots(2, 4, figsize=(22, 10.2 * height / width + 1.4), dpi=100)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
    fig.suptitle(f"{image_path.name}  |  {ckpt}  |  scale {scale}  |  {STRIDE_NOTE} "
                 f"({view.to_px(1):.1f} image px)", fontsize=12)
    _draw_boxes(axes[0, 0], view, dets, names, threshold=threshold)
    _draw_heatmap(fig, axes[0, 1], view, tl_p, title="top-left heatmap")
    _draw_heatmap(fig, axes[0, 2], view, br_p, title="bottom-right heatmap")
    tl = top_corners(outputs.tl_heat[0], outputs.tl_emb[0], outputs.tl_off[0], k=top_k)
    br = top_corners(outputs.br_heat[0], outputs.br_emb[0], outputs.br_off[0], k=top_k)
    _draw_embeddings(fig, axes[0, 3], view, tl, br, top_k=top_k)
    _draw_offsets(axes[1, 0], view, tl, br)
    # the strongest / chosen classes; the training targets take the last panel of all
    _draw_classes(fig, [axes[1, 1], axes[1, 2]] + ([] if gt is not None else [axes[1, 3]]), view, tl_p, br_p,
                  ct_p, names=names, chosen=chosen)
    if gt is not None:
        _draw_targets(axes[1, 3], view, gt_boxes, gt_names, names)

    fig.tight_layout()
    out = Path(out) if out is not None else Path(f"{image_path.stem}_heatmaps.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
