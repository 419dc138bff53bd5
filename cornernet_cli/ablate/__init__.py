"""The paper's ablations (Law & Deng, the ablation study) on any COCO-format dataset.

Variants differ in one thing only; seed, data, schedule, budget and test-time settings are shared:

    baseline             corner pooling on, object-dependent radius (the paper's CornerNet)
    no-corner-pool       corner pooling off                               (paper, COCO val: 36.5 vs 38.4 AP)
    radius-fixed         penalty reduction with a fixed radius            (35.6)
    radius-none          no penalty reduction (one positive pixel)        (32.9)
    gt-heatmaps          the baseline, ground-truth heatmaps              (73.1)
    gt-heatmaps-offsets  the baseline, ground-truth heatmaps and offsets  (86.1)

Output folder `out_dir`:

    <variant>/           a `cornernet train` run folder (trained variants), results.json (every variant's row:
                         settings and metrics) and detections.json (its COCO detections)
    ablation.json        settings, budget, machine, date and every variant's results (rewritten after each)
    ablation.md          the same as Markdown tables in the paper's form, the paper's AP beside ours

A rerun with the same settings skips variants that are done (results.json with the same evaluation
settings and a finished run) and resumes an interrupted training run exactly (`train(resume=True)`).

The oracle variants use `evaluate_model(oracle=..., oracle_gt_embeddings=False)`: ground-truth heatmaps (and
offsets) with the baseline's trained embeddings, as in the paper's error analysis.

The package: variants.py (the variants and studies), settings.py (what they share, the step schedule),
run.py (`run_ablation`), report.py (ablation.json and ablation.md), display.py (progress and ETA).
"""

from cornernet_cli.ablate.report import METRIC_COLUMNS, machine_info, render_markdown
from cornernet_cli.ablate.run import AblationResult, run_ablation
from cornernet_cli.ablate.settings import ABLATION_SCHEDULE
from cornernet_cli.ablate.variants import STUDIES, VARIANTS, Variant, select_variants

__all__ = ["ABLATION_SCHEDULE", "METRIC_COLUMNS", "STUDIES", "VARIANTS", "AblationResult", "Variant", "machine_info",
           "render_markdown", "run_ablation", "select_variants"]
