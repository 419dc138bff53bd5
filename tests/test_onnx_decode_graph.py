"""benchmarks/onnx_decode.py's `DecodeGraph` (the decoder as an ONNX graph would hold it): exported and run by
onnxruntime, it gives `decode`'s valid detections, with and without the centre check, at two sizes from one
graph (the figures of docs/performance.md rest on this)."""

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from benchmarks.decode_speed import same_detections  # noqa: E402
from benchmarks.onnx_decode import export_decode, run_graph, session  # noqa: E402
from cornernet_cli.bench import synthetic_heads  # noqa: E402
from cornernet_cli.decode import decode  # noqa: E402


def _heads(batch: int, size: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Eight heads [batch, 3, size, size]: embeddings that group (N(0, 0.1)), so that pairs survive, and a centre
    peak in the middle cell of the first ten pairs `decode` finds, so that some pass the centre check."""
    tl_heat, br_heat, _, _, tl_off, br_off = synthetic_heads(batch=batch, classes=3, size=size, objects=6, seed=seed)
    g = torch.Generator().manual_seed(seed)
    tl_emb, br_emb = (0.1 * torch.randn(batch, 1, size, size, generator=g) for _ in range(2))
    corners = (tl_heat, br_heat, tl_emb, br_emb, tl_off, br_off)
    ct_heat = -6 + 0.05 * torch.randn(tl_heat.shape, generator=g)
    for b, dets in enumerate(decode(*corners, k=20, num_dets=100)):
        for x1, y1, x2, y2, _, _, _, cls in dets[dets[:, 4] > -1][:10].tolist():
            ct_heat[b, int(cls), int((y1 + y2) / 2), int((x1 + x2) / 2)] = 3.0 + 0.1 * b
    return (*corners, ct_heat, torch.full((batch, 2, size, size), 0.5))


@pytest.mark.parametrize("centre", [False, True])
def test_decode_graph_matches_decode(tmp_path, centre):
    n = 8 if centre else 6
    example = _heads(1, 24, 0)[:n]
    graph = session(export_decode(tmp_path / "decode.onnx", example, centre=centre, k=20, num_dets=100), 1)
    for heads in (example, _heads(2, 32, 5)[:n]):  # batch and size are dynamic
        want = decode(*heads, k=20, num_dets=100)
        assert (want[..., 4] > -1).sum() > 0  # something to compare
        assert same_detections(run_graph(graph, heads), want, atol=1e-4)
