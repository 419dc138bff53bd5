"""Decoding, soft-NMS and post-processing against hand-worked cases and plain reference versions (the decoder's
reference, tests/reference.py, is NumPy loops that import nothing from the package)."""

import math

import numpy as np
import pytest
import torch

import cornernet_cli.decode as decode_module
from benchmarks.decode_speed import topk_maxpool
from cornernet_cli.bench import synthetic_heads
from cornernet_cli.data.letterbox import Letterbox
from cornernet_cli.decode import decode, topk_corners, window_max
from cornernet_cli.postprocess import detections_to_image, merge_detections, soft_nms, to_coco_results
from tests.reference import assert_same_rows, decode_reference, local_maxima_topk


def test_decode_hand_worked():
    c, h, w = 2, 8, 10
    tl, br = torch.full((1, c, h, w), -10.0), torch.full((1, c, h, w), -10.0)
    tl[0, 1, 3, 2] = 2.0       # top-left, class 1, cell (x=2, y=3)
    br[0, 1, 7, 6] = 1.0       # bottom-right, class 1, cell (6, 7)
    br[0, 0, 6, 8] = 3.0       # class 0: never paired with the class-1 corner
    tl_emb, br_emb = torch.zeros(1, 1, h, w), torch.zeros(1, 1, h, w)
    tl_emb[0, 0, 3, 2], br_emb[0, 0, 7, 6], br_emb[0, 0, 6, 8] = 1.0, 1.3, 1.0
    tl_off, br_off = torch.zeros(1, 2, h, w), torch.zeros(1, 2, h, w)
    tl_off[0, :, 3, 2] = torch.tensor([0.25, 0.5])
    br_off[0, :, 7, 6] = torch.tensor([0.75, 0.1])
    dets = decode(tl, br, tl_emb, br_emb, tl_off, br_off, k=5, num_dets=20)
    assert dets.shape == (1, 20, 8)
    s_tl, s_br = 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-1))
    np.testing.assert_allclose(dets[0, 0].numpy(), [2.25, 3.5, 6.75, 7.1, (s_tl + s_br) / 2, s_tl, s_br, 1],
                               rtol=1e-5, atol=1e-6)
    valid = dets[0, dets[0, :, 4] > -1]
    # the only other valid pairs join background corners (score ~0) of one class
    assert (valid[1:, 4] < 1e-3).all()
    strict = decode(tl, br, tl_emb, br_emb, tl_off, br_off, k=5, ae_threshold=0.2)
    assert not ((strict[0, :, 4] > 0.5).any())  # embedding distance 0.3 > 0.2: rejected
    flipped = decode(br, tl, br_emb, tl_emb, br_off, tl_off, k=5)  # corners swapped: inverted boxes
    assert (flipped[0, :, 4] < 0.5).all()


def _untied_heads(**kw) -> tuple[torch.Tensor, ...]:
    """synthetic_heads with a little noise on the heatmaps: their background is clamped to one logit, and among
    exactly tied scores which ones fill the last of the k places is arbitrary (in the package and anywhere)."""
    heads = synthetic_heads(**kw)
    g = torch.Generator().manual_seed(kw.get("seed", 0) + 100)
    return (heads[0] + 1e-3 * torch.randn(heads[0].shape, generator=g),
            heads[1] + 1e-3 * torch.randn(heads[1].shape, generator=g), *heads[2:])


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_corner_selection_equals_reference(kernel):
    """Which corners are picked (class, cell) and their scores, for the fast path and the max-pool original."""
    heads = _untied_heads(batch=2, classes=6, size=24, objects=12, seed=kernel)
    noise = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(kernel))
    for heat, k in [(heads[0], 5), (heads[1], 40), (noise, 20)]:
        _, c, h, w = heat.shape
        for select in (topk_corners, topk_maxpool):
            scores, index = select(heat, k=k, kernel=kernel)
            for b in range(len(heat)):
                want = local_maxima_topk(heat[b].numpy(), k=k, kernel=kernel)
                assert len({t[0] for t in want}) == len(want)  # no ties: the order is defined
                n = len(want)  # fewer than k maxima: the rest of the k places are non-maxima scored 0
                assert (scores[b, n:] == 0).all()
                np.testing.assert_allclose(scores[b, :n].numpy(), [t[0] for t in want], atol=1e-6, rtol=0)
                got_cells = [(i // (h * w), i % (h * w) // w, i % w) for i in index[b, :n].tolist()]
                assert got_cells == [t[1:] for t in want], select.__name__


@pytest.mark.parametrize("kernel", [1, 3, 5])
@pytest.mark.parametrize("ae_threshold", [0.5, 2.0])
def test_decode_equals_reference(kernel, ae_threshold):
    heads = _untied_heads(batch=2, classes=6, size=24, objects=12, seed=kernel)
    for k in (5, 40):
        got = decode(*heads, k=k, kernel=kernel, ae_threshold=ae_threshold, num_dets=k * k)  # nothing cut
        want = decode_reference(*(t.numpy() for t in heads), k=k, kernel=kernel, ae_threshold=ae_threshold)
        if k == 40:
            assert sum(len(x) for x in want) >= 10  # pairs exist to compare
        assert_same_rows(got, want)


@pytest.mark.parametrize("ae_threshold", [0.5, 2.0])
def test_decode_fallback_path_and_noise(ae_threshold):
    g = torch.Generator().manual_seed(3)
    # tiny map: fewer cells than k; noise, 80 rows: the whole-map path; noise, 320 rows: the upper-rows path
    for shape, k in [((1, 2, 3, 4), 30), ((2, 5, 16, 16), 20), ((2, 10, 32, 16), 20)]:
        heads = (torch.randn(shape, generator=g), torch.randn(shape, generator=g),
                 torch.randn(shape[0], 1, *shape[2:], generator=g), torch.randn(shape[0], 1, *shape[2:], generator=g),
                 torch.rand(shape[0], 2, *shape[2:], generator=g), torch.rand(shape[0], 2, *shape[2:], generator=g))
        kk = min(k, shape[1] * shape[2] * shape[3])
        got = decode(*heads, k=k, num_dets=kk * kk, ae_threshold=ae_threshold)
        assert_same_rows(got, decode_reference(*(t.numpy() for t in heads), k=kk, ae_threshold=ae_threshold))
    with pytest.raises(ValueError):
        topk_corners(torch.zeros(1, 1, 4, 4), k=2, kernel=2)


def test_decode_pads_when_num_dets_exceeds_pairs():
    heads = synthetic_heads(batch=1, classes=2, size=8, objects=2)
    dets = decode(*heads, k=3, num_dets=20)
    assert dets.shape == (1, 20, 8) and (dets[0, 9:, 4] == -1).all()


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / u


def _soft_nms_reference(boxes, scores, classes, method, sigma, nt, thresh):
    """Plain sequential soft-NMS, one class at a time, one box at a time."""
    out = {}
    for c in set(classes.tolist()):
        pool = [(i, float(scores[i])) for i in range(len(boxes)) if classes[i] == c and scores[i] >= thresh]
        while pool:
            j = max(range(len(pool)), key=lambda q: pool[q][1])
            i, s = pool.pop(j)
            out[i] = s
            rest = []
            for idx, sc in pool:
                ov = _iou(boxes[i], boxes[idx])
                if method == "gaussian":
                    sc *= math.exp(-ov * ov / sigma)
                elif method == "linear":
                    sc *= (1 - ov) if ov > nt else 1
                else:
                    sc *= 0 if ov > nt else 1
                if sc >= thresh:
                    rest.append((idx, sc))
            pool = rest
    return out


@pytest.mark.parametrize("method", ["gaussian", "linear", "hard"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_soft_nms_equals_sequential_reference(method, seed):
    rng = np.random.default_rng(seed)
    n = 150
    xy = rng.uniform(0, 60, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (n, 2))], axis=1)
    scores = rng.uniform(0, 1, n)
    classes = rng.integers(0, 4, n)
    keep, new = soft_nms(boxes, scores, classes, method=method, sigma=0.5, iou_threshold=0.5,
                         score_threshold=0.05)
    expect = _soft_nms_reference(boxes, scores, classes, method, 0.5, 0.5, 0.05)
    assert len(set(keep.tolist())) == len(keep)  # no duplicates
    assert sorted(keep.tolist()) == sorted(expect)
    np.testing.assert_allclose(new, [expect[i] for i in keep.tolist()], rtol=1e-9)
    assert (np.diff(new) <= 0).all()


@pytest.mark.parametrize("method", ["gaussian", "linear", "hard", "none"])
@pytest.mark.parametrize("max_keep", [1, 7, 100, 5000])
@pytest.mark.parametrize("ties", [False, True])
def test_soft_nms_max_keep_is_the_cut_of_the_full_result(method, max_keep, ties):
    # The early stop must give exactly the first max_keep rows of a full run: boxes sit in clusters so decays
    # interact across steps; with ties, scores are rounded to 0.05 so many are equal.
    rng = np.random.default_rng(max_keep)
    n = 1200
    centres = rng.uniform(0, 200, (40, 2))[rng.integers(0, 40, n)] + rng.normal(0, 4, (n, 2))
    sizes = rng.uniform(8, 30, (n, 2))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    scores = rng.uniform(0, 1, n)
    scores = np.round(scores / 0.05) * 0.05 if ties else scores
    classes = rng.integers(0, 3, n)
    args = dict(method=method, sigma=0.5, iou_threshold=0.5, score_threshold=0.001)
    keep, new = soft_nms(boxes, scores, classes, **args)
    cut_keep, cut_new = soft_nms(boxes, scores, classes, **args, max_keep=max_keep)
    np.testing.assert_array_equal(cut_keep, keep[:max_keep])
    np.testing.assert_array_equal(cut_new, new[:max_keep])


@pytest.mark.parametrize("method", ["gaussian", "linear", "hard"])
@pytest.mark.parametrize("threshold", [0.05, 0.3, 0.6])
def test_merge_under_an_output_threshold_keeps_what_passes_it(method, threshold):
    # detect and Detector.predict raise soft-NMS's score_threshold to their output threshold
    # (detect.output_settings): the detections at or above it must be those of the full run.
    rng = np.random.default_rng(int(threshold * 100))
    n = 800
    centres = rng.uniform(0, 200, (30, 2))[rng.integers(0, 30, n)] + rng.normal(0, 4, (n, 2))
    sizes = rng.uniform(8, 30, (n, 2))
    dets = np.concatenate([centres - sizes / 2, centres + sizes / 2, rng.uniform(0, 1, (n, 1)),
                           rng.integers(0, 3, (n, 1))], axis=1)
    full = merge_detections(dets, nms=method, max_per_image=100)
    early = merge_detections(dets, nms=method, max_per_image=100, score_threshold=threshold)
    np.testing.assert_array_equal(early[early[:, 4] >= threshold], full[full[:, 4] >= threshold])
    assert (early[:, 4] >= threshold).all()


def test_mirror_mapping_and_clipping():
    lb = Letterbox(image_size=(100, 200), scale=(1.0, 1.0), input_size=(127, 255), offset=(27, 13),
                   output_size=(32, 64))
    row = np.array([[10.0, 5.0, 20.0, 15.0, 0.9, 0.9, 0.9, 3.0]])
    plain = detections_to_image(row, lb)
    sx, sy = 255 / 64, 127 / 32
    np.testing.assert_allclose(plain[0, :4], [10 * sx - 27, 5 * sy - 13, 20 * sx - 27, 15 * sy - 13])
    mirrored = detections_to_image(row, lb, mirrored=True)
    np.testing.assert_allclose(mirrored[0, [0, 2]], [(64 - 20) * sx - 27, (64 - 10) * sx - 27])
    outside = np.array([[0.0, 0.0, 5.0, 2.0, 0.5, 0, 0, 0], [1, 1, 2, 2, -1, 0, 0, 0]])
    assert len(detections_to_image(outside, lb)) == 0  # in the padding: no area; rejected row dropped


def test_merge_and_coco_results():
    dets = np.array([[0, 0, 10, 10, 0.9, 0, 0, 1], [0, 0, 10, 10, 0.8, 0, 0, 1], [50, 50, 60, 70, 0.7, 0, 0, 0]],
                    dtype=float)
    merged = merge_detections([dets[:2], dets[2:]], max_per_image=2)
    assert merged.shape == (2, 6)
    np.testing.assert_allclose(merged[:, 4], [0.9, 0.7])
    full = merge_detections(dets, max_per_image=100)
    assert full[2, 4] == pytest.approx(0.8 * math.exp(-2))
    res = to_coco_results(merged, 42, [7, 9])
    assert res[0] == {"image_id": 42, "category_id": 9, "bbox": [0.0, 0.0, 10.0, 10.0], "score": 0.9}
    assert res[1]["bbox"] == [50.0, 50.0, 10.0, 20.0] and res[1]["category_id"] == 7


def _all_local_maxima(heat: torch.Tensor, kernel: int) -> list[tuple[float, int, int, int]]:
    return local_maxima_topk(heat.numpy(), k=heat.numel(), kernel=kernel)


def _assert_top_local_maxima(heat: torch.Tensor, scores: torch.Tensor, index: torch.Tensor, *, k: int,
                             kernel: int) -> None:
    """topk_corners' answer for [B, C, h, w] logits is a top k of the local maxima, ties allowed: the reference's
    score sequence, distinct cells that are all local maxima, every maximum above the k-th among them, and the
    places past the map's last maximum scored 0."""
    _, c, h, w = heat.shape
    for b in range(len(heat)):
        maxima = _all_local_maxima(heat[b], kernel)
        n = min(k, len(maxima))
        np.testing.assert_allclose(scores[b, :n].numpy(), [t[0] for t in maxima[:n]], atol=1e-6, rtol=0)
        assert (scores[b, n:] == 0).all()
        cells = [(i // (h * w), i % (h * w) // w, i % w) for i in index[b, :n].tolist()]
        assert len(set(cells)) == n and set(cells) <= {t[1:] for t in maxima}
        assert {t[1:] for t in maxima if t[0] > maxima[n - 1][0] + 1e-6} <= set(cells)


@pytest.fixture
def paths(monkeypatch):
    """Records which steps topk_corners takes: "window" per round of the upper-rows path (one image), "dense B"
    per whole-map pass over a batch of B."""
    taken = []
    window_is_max, dense = decode_module._window_is_max, decode_module._topk_dense

    def counted_window(flat, **kw):
        taken.append("window")
        return window_is_max(flat, **kw)

    def counted_dense(heat, **kw):
        taken.append(f"dense {len(heat)}")
        return dense(heat, **kw)

    monkeypatch.setattr(decode_module, "_window_is_max", counted_window)
    monkeypatch.setattr(decode_module, "_topk_dense", counted_dense)
    return taken


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_upper_set_path_edge_cases(kernel, paths):
    """The upper-rows path of topk_corners (maps of at least 16k rows) against the NumPy loops: ties, a flat map
    (every cell ties, every cell a maximum), a map that needs a second round, a batch whose images need different
    rounds, and an image with fewer than k maxima (the whole batch takes the whole-map pass)."""
    g = torch.Generator().manual_seed(kernel)
    c, h, w, k = 10, 32, 16, 5  # 320 rows: a first round of 4k = 20 rows, a second of 80
    noise = torch.randn(c, h, w, generator=g)
    ties = torch.round(torch.randn(c, h, w, generator=g) * 2) / 2  # a few distinct logits, each on many cells
    flat = torch.zeros(c, h, w)
    # a gaussian ridge (height 12: not saturated in float32) whose 23 upper rows, above the noise (< 4.5),
    # hold one maximum: the first round's 20 rows are not enough
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    ridge = noise.clone()
    ridge[3] = 12 * torch.exp(-((yy - h // 2) ** 2 + (xx - w // 2) ** 2) / 128)
    for batch, steps in [([noise, ties], 2), ([flat], 1), ([ridge, noise], 3), ([ties, ridge], 3)]:
        heat = torch.stack(batch)
        paths.clear()
        scores, index = topk_corners(heat, k=k, kernel=kernel)
        _assert_top_local_maxima(heat, scores, index, k=k, kernel=kernel)
        assert paths == (["window"] * steps if kernel > 1 else [])  # kernel 1: a plain top k
    if kernel == 1:
        return  # every cell is a maximum
    # two planes falling away from their first cell: two maxima < k in the second image (96 rows: one round),
    # so the whole batch takes the whole-map pass, which fills the places past them with non-maxima scored 0
    few = -torch.arange(2 * 48 * 16).float().view(2, 48, 16) / 1e3
    heat = torch.stack([torch.randn(2, 48, 16, generator=g), few])
    paths.clear()
    scores, index = topk_corners(heat, k=k, kernel=kernel)
    _assert_top_local_maxima(heat, scores, index, k=k, kernel=kernel)
    assert paths == ["window", "window", "dense 2"] and len(_all_local_maxima(few, kernel)) == 2


@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
def test_window_max_equals_max_pool(kernel):
    """The whole-map pass's window maximum: F.max_pool2d's values, ties and maps narrower than the window too."""
    g = torch.Generator().manual_seed(kernel)
    for shape in [(2, 3, 9, 7), (1, 2, 1, 5), (1, 1, 4, 1), (1, 1, 2, 2)]:
        p = torch.round(torch.rand(shape, generator=g) * 4) / 4
        want = torch.nn.functional.max_pool2d(p, kernel, stride=1, padding=kernel // 2)
        assert torch.equal(window_max(p, kernel=kernel), want)
