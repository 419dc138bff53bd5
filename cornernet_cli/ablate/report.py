"""What an ablation writes: ablation.json (settings, machine, date, every variant's row) and ablation.md (the
paper's tables, the paper's AP beside ours)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

from cornernet_cli.ablate.settings import Settings
from cornernet_cli.ablate.variants import STUDIES, VARIANTS
from cornernet_cli.atomic import atomic_write, write_json

METRIC_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`; None when it is missing or not JSON (a variant not yet done)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """CPU model (/proc/cpuinfo), core count, torch version and threads, and the GPU name on CUDA."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": device, "python": platform.python_version()}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def pct(x: Any) -> str:
    """A fraction as a percentage with one decimal; "-" for none (None, or COCO's -1 for no such objects)."""
    return "-" if x is None or x < 0 else f"{100 * x:.1f}"


def render_markdown(report: dict[str, Any]) -> str:
    """ablation.md: the settings and one table per study (AP columns in percent, the paper's AP beside)."""
    st, mc = report["settings"], report["machine"]
    budget = f"{st['iters']} iterations" + (f" or {st['minutes_per_variant']} min" if st["minutes_per_variant"]
                                            else "")
    lines = [
        "# CornerNet ablations", "",
        f"- dataset: `{st['data']}`, evaluated on split `{st['split']}` "
        f"({'flip' if st['flip'] else 'no flip'}, single scale"
        + (f", first {st['max_images']} images" if st["max_images"] else "") + ")",
        f"- preset `{st['preset']}`, input {st['input_size']} px, batch {st['batch_size']}, seed {st['seed']}; "
        f"budget per variant: {budget}",
        f"- machine: {mc['cpu']}, {mc['cores']} cores, torch {mc['torch']} ({mc['threads']} threads), "
        f"device {mc['device']}" + (f" ({mc['gpu']})" if mc.get("gpu") else ""),
        f"- date: {report['date']}", "",
        "AP columns are COCO box AP in percent. \"paper AP\" is the paper's COCO val figure (Hourglass-104, 250k "
        "iterations of batch 49): it shows the direction and size of each effect, not a number to match on "
        "another dataset and budget.", "",
    ]
    rows = {r["variant"]: r for r in report["variants"]}
    for title, names in STUDIES.items():
        names = [n for n in names if n in report["selected"]]
        if len(names) < 2 and not any(VARIANTS[n].oracle for n in names):
            continue
        lines += [f"## {title}", "",
                  "| variant | change | steps | train min | CPU min | img/s | " + " | ".join(METRIC_COLUMNS)
                  + " | paper AP |",
                  "|---|---|--:|--:|--:|--:|" + "--:|" * len(METRIC_COLUMNS) + "--:|"]
        for n in names:
            v, r = VARIANTS[n], rows.get(n)
            if r is None:
                cells = ["pending"] * 4 + [""] * len(METRIC_COLUMNS)
            else:
                trained = rows.get(n if v.oracle is None else "baseline", {})
                cells = [str(trained.get("steps", "-")),
                         f"{trained['train_seconds'] / 60:.1f}" if trained.get("train_seconds") is not None else "-",
                         f"{trained['cpu_min']:.1f}" if trained.get("cpu_min") is not None else "-",
                         f"{trained['images_per_s']:.1f}" if trained.get("images_per_s") else "-",
                         *(pct(r["metrics"].get(c)) for c in METRIC_COLUMNS)]
                if v.oracle:
                    cells[:4] = ["(baseline)"] * 4
            lines.append(f"| {n} | {v.change} | " + " | ".join(cells) + f" | {v.paper_ap} |")
        lines.append("")
    if any(VARIANTS[n].oracle for n in report["selected"]):
        lines += ["The ground-truth rows replace the heatmaps (and offsets) by ground truth and keep the baseline's "
                  "trained embeddings, as the paper's error analysis does.", ""]
    return "\n".join(lines)


def write_report(s: Settings, selected: list[str], results: dict[str, dict], machine: dict, date: str) -> dict:
    for name, row in results.items():  # training CPU time (threads summed, validation excluded) from the run
        cpu_min = (read_json(s.out_dir / name / "summary.json") or {}).get("cpu_min")
        if cpu_min is not None:
            row["cpu_min"] = cpu_min
    report = {
        "settings": {"data": str(s.data_dir), "split": s.split, "preset": s.preset, "iters": s.iters,
                     "minutes_per_variant": s.minutes, "batch_size": s.batch_size, "input_size": s.input_size,
                     "seed": s.seed, "flip": s.flip, "max_images": s.max_images, "device": s.device},
        "machine": machine, "date": date, "selected": selected, "job": s.job(),
        "variants": [results[n] for n in selected if n in results],
        "paper_ap": {n: VARIANTS[n].paper_ap for n in selected},
    }
    write_json(s.out_dir / "ablation.json", report, indent=2)
    atomic_write(s.out_dir / "ablation.md", lambda tmp: Path(tmp).write_text(render_markdown(report)))
    return report
