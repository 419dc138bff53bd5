"""`cornernet eval` sharded across processes (what torchrun launches): two gloo processes on the CPU give the same
COCO results and metrics as one process, and only rank 0 writes files.

The processes meet through a file store (no TCP port), and each runs `evaluate` with torchrun's RANK /
WORLD_SIZE / LOCAL_RANK in its environment."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cornernet_cli.engine.checkpoint import load_model
from cornernet_cli.engine.evaluate import evaluate, evaluate_model
from tests.test_evaluate import make_trained_run

SETTINGS = {"split": "val", "flip": False, "max_images": 3, "progress": False}  # 3 images: uneven shards 2 + 1


def _rank_main(rank: int, world: int, store: str, data: str, ckpt: str, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        metrics = evaluate(checkpoint=ckpt, data_dir=data, out=out, **SETTINGS)
        Path(f"{out}.rank{rank}.json").write_text(json.dumps(metrics))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return make_trained_run(tmp_path_factory.mktemp("shards"))


def test_two_processes_give_the_metrics_of_one(trained, tmp_path):
    data, ckpt = trained
    one = evaluate(checkpoint=ckpt, data_dir=data, out=tmp_path / "one" / "results.json", **SETTINGS)
    out = tmp_path / "two" / "results.json"
    out.parent.mkdir()
    mp.spawn(_rank_main, args=(2, str(tmp_path / "store"), str(data), str(ckpt), str(out)), nprocs=2)
    ranks = [json.loads(Path(f"{out}.rank{r}.json").read_text()) for r in range(2)]
    assert one["detections"] > 0 and one["images"] == 3
    for metrics in ranks:  # every rank returns rank 0's metrics
        assert metrics["world_size"] == 2 and metrics["images"] == 3
        assert metrics["detections"] == one["detections"]
        for key in ("AP", "AP50", "AR100"):
            assert metrics[key] == one[key]
    assert [m["rank"] for m in ranks] == [0, 1]

    def by_image(path: Path) -> list:
        return sorted(json.loads(path.read_text()), key=lambda r: (r["image_id"], -r["score"], r["bbox"]))

    assert by_image(out) == by_image(tmp_path / "one" / "results.json")
    written = json.loads(out.with_name("metrics.json").read_text())
    assert written["world_size"] == 2 and "rank" not in written and written["AP"] == one["AP"]


def test_bad_rank_is_refused(trained):
    data, ckpt = trained
    model, meta = load_model(ckpt)
    with pytest.raises(ValueError, match="rank must be in"):
        evaluate_model(model, data, "val", class_names=meta["class_names"], rank=2, world_size=2)
