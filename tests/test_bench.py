"""`cornernet bench` and the benchmark helpers: every figure present and sane; the CPU corner pooling equals the
torch.cummax formulation (tests/reference.py) in values and gradients, ties included; the side-by-side
scripts in benchmarks/ run."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from benchmarks.corner_pool_speed import bench_corner_pool
from benchmarks.decode_speed import bench_decode
from cornernet_cli.bench import METRICS, median_ms, peak_memory_mb, run_bench
from cornernet_cli.cli import app
from cornernet_cli.errors import CornerNetError
from cornernet_cli.model import build_model
from cornernet_cli.model.corner_pool import DIRECTIONS, corner_pool
from tests.reference import corner_pool_cummax


def test_bench_cli_writes_every_metric(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "--preset", "tiny", "--input-size", "64", "--repeats", "2",
                                      "--threads", "1", "--image-size", "80x60", "--json", str(out)])
    assert result.exit_code == 0, result.output
    for word in ("forward", "decode", "soft-NMS", "detect", "training step", "data pipeline", "peak memory"):
        assert word in result.output
    r = json.loads(out.read_text())
    for key in (*METRICS, "train_step_ms", "peak_memory_inference_mb", "peak_memory_train_mb"):
        assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, key
    assert r["parameters"] == sum(p.numel() for p in build_model("tiny", 80).parameters())
    assert r["settings"]["input_size"] == 64 and r["settings"]["image_size"] == [60, 80]
    assert r["environment"]["torch"] == torch.__version__ and len(r["environment"]["loadavg"]) == 3
    assert set(r["loadavg"]) >= {"forward", "decode", "soft_nms", "detect", "train", "data"}
    # the stage split of detect adds up to about the measured total (means vs a median: loose bound)
    assert sum(r["detect_stages_ms"].values()) > 0


def test_detect_stage_times_add_up_to_the_wall_time():
    """The per-stage split that `cornernet bench` reports (StageTimer) covers each detect call end to end: the
    stages' sum per image matches the wall time measured around the calls, here, independently."""
    import time

    import numpy as np

    from cornernet_cli.engine.inference import StageTimer, detect_images

    model = build_model("tiny", 3).eval()
    images = [np.random.default_rng(i).integers(0, 255, (60, 80, 3), dtype=np.uint8) for i in range(2)]
    timer = StageTimer()
    wall = 0.0
    for _ in range(3):
        start = time.perf_counter()
        detect_images(model, images, flip=True, timer=timer)
        wall += time.perf_counter() - start
    stages = timer.per_image_ms()
    total = stages.pop("total")
    assert total == pytest.approx(sum(stages.values())) and min(stages.values()) > 0
    assert 0.8 * wall <= total * timer.images / 1000 <= wall, (total, wall)


def test_bench_rejects_bad_settings():
    with pytest.raises(CornerNetError, match="fp16"):
        run_bench(preset="tiny", amp="fp16")
    with pytest.raises(CornerNetError, match="amp must be"):
        run_bench(preset="tiny", amp="fp8")
    with pytest.raises(CornerNetError, match="huge"):
        run_bench(preset="huge", input_size=32, repeats=1, threads=1)
    result = CliRunner().invoke(app, ["bench", "--image-size", "640by480"])
    assert result.exit_code != 0


def test_median_ms_and_memory():
    calls = []
    ms = median_ms(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5 and 0 <= ms < 100
    assert peak_memory_mb(torch.device("cpu")) > 10  # a Python process with torch holds more than 10 MiB


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("shape", [(2, 3, 9, 7), (1, 1, 1, 5), (1, 2, 6, 1)])
def test_corner_pool_equals_cummax_with_ties(direction, shape):
    g = torch.Generator().manual_seed(1)
    # few distinct values and ReLU zeros: many ties, where the arg-max rule decides who gets the gradient
    x = torch.relu(torch.randint(-2, 3, shape, generator=g).double())
    upstream = torch.randn(shape, generator=g, dtype=torch.float64)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_a, out_b = corner_pool(a, direction), corner_pool_cummax(b, direction)
    assert torch.equal(out_a, out_b)
    out_a.backward(upstream)
    out_b.backward(upstream)
    assert torch.allclose(a.grad, b.grad, atol=1e-12, rtol=0)
    assert torch.allclose(a.grad.sum(), upstream.sum())  # every output's gradient lands somewhere once


def test_corner_pool_channels_last_and_no_grad():
    x = torch.randn(2, 4, 6, 5).contiguous(memory_format=torch.channels_last)
    for d in DIRECTIONS:
        with torch.no_grad():
            assert torch.equal(corner_pool(x, d), corner_pool_cummax(x, d))


def test_bench_corner_pool_reports_times():
    r = bench_corner_pool(shape=(1, 4, 8, 8), repeats=2, threads=1)
    assert all(r[k] > 0 for k in ("now_ms", "cummax_ms", "bar_ms", "forward_now_ms", "forward_cummax_ms"))
    assert r["speedup"] == pytest.approx(r["cummax_ms"] / r["now_ms"])


@pytest.mark.parametrize("inputs", ["peaks", "noise"])
def test_bench_decode_reports_times_and_same_output(inputs):
    r = bench_decode(classes=3, size=16, k=40, threads=1, repeats=2, inputs=inputs)
    assert r["fast_ms"] > 0 and r["reference_ms"] > 0 and r["same_output"]
    assert r["speedup"] == pytest.approx(r["reference_ms"] / r["fast_ms"])
