"""`cornernet ablate`: single-change variants, tables with real AP values, skip on rerun, exact resume."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cornernet_cli.ablate import VARIANTS, run_ablation, select_variants
from cornernet_cli.cli import app
from cornernet_cli.data.synthetic import write_synthetic_dataset
from cornernet_cli.engine.checkpoint import load_model
from cornernet_cli.errors import CornerNetError

runner = CliRunner()
TINY = ["--preset", "tiny", "--iters", "10", "--input-size", "64", "--batch-size", "2", "--workers", "0",
        "--no-flip", "--device", "cpu", "--seed", "2"]


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn")
    write_synthetic_dataset(out, num_train=12, num_val=6, image_size=80, seed=1)
    return out


@pytest.fixture(scope="module")
def first_run(syn, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("ablate")
    result = runner.invoke(app, ["ablate", "--data", str(syn), "--out", str(out), "--no-corner-pool", *TINY])
    assert result.exit_code == 0, result.output
    return out, result.output


def _cocoeval_stats(gt_json: Path, results_json: Path) -> list[float]:
    """COCOeval's 12 summary numbers, straight from pycocotools."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        ev = COCOeval(gt, gt.loadRes(str(results_json)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


def _rows(out: Path) -> dict[str, dict]:
    return {r["variant"]: r for r in json.loads((out / "ablation.json").read_text())["variants"]}


def test_selection_flags():
    assert select_variants() == list(VARIANTS)
    assert select_variants(corner_pool=True) == ["baseline", "no-corner-pool"]
    assert select_variants(radius=["none", "object"]) == ["baseline", "radius-none"]
    assert select_variants(error_analysis=True) == ["baseline", "gt-heatmaps", "gt-heatmaps-offsets"]
    with pytest.raises(CornerNetError, match="'big'"):
        select_variants(radius=["big"])


def test_no_corner_pool_table_has_both_rows_with_real_ap(syn, first_run):
    out, _ = first_run
    rows = _rows(out)
    assert list(rows) == ["baseline", "no-corner-pool"]
    for name, row in rows.items():
        assert row["steps"] == 10 and row["status"] == "finished" and row["train_seconds"] > 0
        config = json.loads((out / name / "config.json").read_text())
        # one change only: corner pooling; same seed, schedule, radius and input
        assert config["model"]["corner_pool"] is (name == "baseline")
        assert config["data"]["radius_mode"] == "object" and config["data"]["input_size"] == 64
        assert config["train"]["seed"] == 2 and config["train"]["iters"] == 10
        # the table's numbers are pycocotools' COCOeval of the variant's detections (detections.json) against
        # the dataset's annotations, run here directly (not through the package's evaluation code)
        again = _cocoeval_stats(syn / "annotations" / "val.json", out / name / "detections.json")
        for i, col in enumerate(("AP", "AP50", "AP75", "APs", "APm", "APl")):
            assert row["metrics"][col] == pytest.approx(again[i], abs=1e-9), (name, col)
        load_model(out / name / "last.safetensors")  # the variant's checkpoint is there and loads
        assert 0.0 <= row["metrics"]["AP"] <= 1.0 and row["metrics"]["images"] == 6
    md = (out / "ablation.md").read_text()
    assert "## Corner pooling" in md and "10 iterations" in md and "torch" in md and "tiny" in md
    for name in rows:
        line = next(x for x in md.splitlines() if x.startswith(f"| {name} |"))
        assert f" {100 * rows[name]['metrics']['AP']:.1f} |" in line
        assert line.rstrip().endswith(f"| {VARIANTS[name].paper_ap} |")  # the paper's AP beside ours
    assert "Penalty reduction" not in md  # only the selected study


def test_rerun_skips_finished_variants(syn, first_run):
    out, _ = first_run
    before = {p: p.stat().st_mtime_ns for n in ("baseline", "no-corner-pool")
              for p in (out / n / "last.safetensors", out / n / "results.json")}
    rows_before = _rows(out)
    result = runner.invoke(app, ["ablate", "--data", str(syn), "--out", str(out), "--no-corner-pool", *TINY])
    assert result.exit_code == 0, result.output
    assert "2 skipped" in result.output
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing retrained or re-evaluated
    assert _rows(out) == rows_before


def test_error_analysis_reuses_the_baseline(syn, first_run):
    out, _ = first_run
    weights = (out / "baseline" / "last.safetensors").stat().st_mtime_ns
    result = runner.invoke(app, ["ablate", "--data", str(syn), "--out", str(out), "--error-analysis", *TINY])
    assert result.exit_code == 0, result.output
    assert (out / "baseline" / "last.safetensors").stat().st_mtime_ns == weights
    rows = _rows(out)
    assert list(rows) == ["baseline", "gt-heatmaps", "gt-heatmaps-offsets"]
    # ground-truth heatmaps, offsets and embeddings: the decoder alone, near-perfect boxes
    assert rows["gt-heatmaps-offsets"]["metrics"]["AP"] > 0.9
    assert rows["gt-heatmaps"]["metrics"]["AP"] > rows["baseline"]["metrics"]["AP"]
    assert "## Error analysis" in (out / "ablation.md").read_text()


def test_interrupted_variant_resumes_exactly(syn, first_run, tmp_path, monkeypatch):
    import cornernet_cli.engine.train as train_module

    original = train_module.train
    monkeypatch.setattr(train_module, "train", lambda **kw: original(**{**kw, "stop_at_step": 4}))
    kw = dict(data_dir=syn, out_dir=tmp_path, variants=["baseline"], preset="tiny", iters=10, batch_size=2,
              input_size=64, workers=0, flip=False, device="cpu", seed=2, progress=False)
    assert run_ablation(**kw).status == "interrupted"
    assert not (tmp_path / "baseline" / "results.json").exists()
    monkeypatch.setattr(train_module, "train", original)
    result = run_ablation(**kw)
    assert result.status == "finished" and result.skipped == []
    steps = [json.loads(x)["step"] for x in (tmp_path / "baseline" / "metrics.jsonl").read_text().splitlines()]
    assert steps[0] == 1 and steps[-1] == 10 and 4 in steps
    # stopped at 4 and resumed == the uninterrupted baseline of the first run (same seed and settings)
    a = load_file(str(tmp_path / "baseline" / "last.safetensors"))
    b = load_file(str(first_run[0] / "baseline" / "last.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_input_is_one_line_error(syn, first_run, tmp_path):
    result = runner.invoke(app, ["ablate", "--data", str(syn), "--out", str(first_run[0]), "--no-corner-pool",
                                 *TINY, "--iters", "11"])
    assert result.exit_code != 0 and "iters 10 there vs 11 now" in str(result.exception)
    with pytest.raises(CornerNetError, match="split 'test'"):
        run_ablation(data_dir=syn, out_dir=tmp_path, variants=["baseline"], split="test", preset="tiny")
    with pytest.raises(CornerNetError, match="no train split"):
        run_ablation(data_dir=tmp_path, out_dir=tmp_path / "o", variants=["baseline"], preset="tiny")


def test_time_budget_records_the_steps_reached(syn, tmp_path):
    kw = dict(data_dir=syn, out_dir=tmp_path, variants=["baseline"], preset="tiny", iters=100_000, batch_size=2,
              input_size=64, workers=0, flip=False, device="cpu", seed=2, progress=False, minutes_per_variant=0.002)
    first = run_ablation(**kw)
    row = _rows(tmp_path)["baseline"]
    assert first.status == "finished" and row["status"] == "time limit" and 1 <= row["steps"] < 100_000
    assert "or 0.002 min" in (tmp_path / "ablation.md").read_text()
    again = run_ablation(**kw)  # the budget is spent: skipped, not resumed
    assert again.skipped == ["baseline"] and _rows(tmp_path)["baseline"]["steps"] == row["steps"]
