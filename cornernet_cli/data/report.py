"""The rich summary printed by prepare-data: one table of splits, one of boxes per class, the problem list."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table

from cornernet_cli.data.convert import PrepareReport


def print_report(report: PrepareReport, console: Console, max_problems: int = 50) -> None:
    """Print the split table, boxes per class per split, problem counts by kind and the first problems."""
    table = Table(title=f"{report.out}  ({report.format} from {report.source})")
    for col in ("split", "images", "empty", "boxes", "crowd", "dropped", "problems"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for s in report.splits:
        n_prob = sum(p.split == s.name and p.is_error for p in report.problems)
        table.add_row(s.name, str(len(s.images)), str(s.empty_images), str(sum(s.boxes_per_class.values())),
                      str(s.crowd), str(s.dropped), str(n_prob))
    console.print(table)

    per_class = Table(title="boxes per class (crowd excluded)")
    per_class.add_column("id", justify="right")
    per_class.add_column("class")
    for s in report.splits:
        per_class.add_column(s.name, justify="right")
    for i, name in enumerate(report.class_names):
        per_class.add_row(str(i), name, *(str(s.boxes_per_class.get(i, 0)) for s in report.splits))
    console.print(per_class)

    if not report.problems:
        console.print("[green]no problems found[/]")
        return
    kinds = Counter(p.kind for p in report.problems)
    console.print("problems: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common()))
    for p in report.problems[:max_problems]:  # one line each: long paths stay whole and grep-able
        console.print(f"  [{p.split or '-'}] {p.kind}: {p.file}: {p.detail} -> {p.action}", soft_wrap=True,
                      highlight=False, markup=False)
    if len(report.problems) > max_problems:
        console.print(f"... and {len(report.problems) - max_problems} more in {report.out / 'report.json'}")
