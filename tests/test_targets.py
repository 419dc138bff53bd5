"""Targets: radius, gaussian bumps, encode_targets, gather_at (independent expectations)."""

import math

import numpy as np
import pytest
import torch

from cornernet_cli.targets import draw_gaussian, encode_targets, gather_at, gaussian_radius


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _largest_r(h, w, t, moved):
    """Bisection on the geometry itself: largest r with IoU(box, moved(box, r)) >= t."""
    box = (0.0, 0.0, w, h)
    lo, hi = 0.0, max(h, w)
    for _ in range(200):
        mid = (lo + hi) / 2
        if _iou(box, moved(mid)) >= t:
            lo = mid
        else:
            hi = mid
    return lo


def test_radius_hand_worked():
    # h = w = 10, t = 0.3: the shrinking case binds: 4r^2 - 40r + 70 = 0 -> r = (40 - sqrt(480)) / 8.
    assert gaussian_radius(10, 10, 0.3) == pytest.approx((40 - math.sqrt(480)) / 8, abs=1e-12)
    assert gaussian_radius(10, 10, 0.3) == pytest.approx(2.2614, abs=1e-4)
    assert gaussian_radius(0, 5) == 0.0


@pytest.mark.parametrize("h,w,t", [(10, 10, 0.3), (3, 40, 0.3), (25, 7, 0.5), (1, 1, 0.3), (100, 60, 0.7)])
def test_radius_matches_geometry(h, w, t):
    same = _largest_r(h, w, t, lambda r: (r, r, w + r, h + r))
    shrink = _largest_r(h, w, t, lambda r: (r, r, w - r, h - r))
    grow = _largest_r(h, w, t, lambda r: (-r, -r, w + r, h + r))
    assert gaussian_radius(h, w, t) == pytest.approx(min(same, shrink, grow), abs=1e-6)


def test_draw_gaussian_formula_and_max():
    heat = np.zeros((11, 13), np.float32)
    heat[5, 9] = 0.9  # an existing value larger than the new bump there is kept
    draw_gaussian(heat, (6, 5), 2)
    sigma = 5 / 6
    for y in range(11):
        for x in range(13):
            dx, dy = x - 6, y - 5
            expect = math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma)) if abs(dx) <= 2 and abs(dy) <= 2 else 0
            if (y, x) == (5, 9):
                expect = 0.9
            assert heat[y, x] == pytest.approx(expect, abs=1e-6), (y, x)
    assert heat[5, 6] == 1.0


def test_draw_gaussian_border_and_fixed_radius():
    heat = np.zeros((6, 6), np.float32)
    draw_gaussian(heat, (0, 5), 3)  # clipped at the left and bottom borders
    sigma = 7 / 6
    assert heat[5, 0] == 1.0
    assert heat[2, 3] == pytest.approx(math.exp(-18 / (2 * sigma * sigma)), abs=1e-6)
    assert heat[1, 0] == 0.0
    fixed = np.zeros((9, 9), np.float32)
    draw_gaussian(fixed, (4, 4), 2.5)  # 5 x 5 square, sigma = 1
    assert (fixed > 0).sum() == 25
    assert fixed[2, 2] == pytest.approx(math.exp(-4), abs=1e-6)
    single = np.zeros((3, 3), np.float32)
    draw_gaussian(single, (1, 1), 0)
    assert single.sum() == 1.0 and single[1, 1] == 1.0


def test_encode_targets_hand_worked():
    t = encode_targets(np.array([[10, 20, 50, 70]]), np.array([3]), 5, (512, 512), (128, 128))
    # scaled: 2.5, 5, 12.5, 17.5
    assert t["tl_index"].tolist() == [5 * 128 + 2]
    assert t["br_index"].tolist() == [17 * 128 + 12]
    np.testing.assert_allclose(t["tl_off"], [[0.5, 0.0]])
    np.testing.assert_allclose(t["br_off"], [[0.5, 0.5]])
    assert t["tl_heat"][3, 5, 2] == 1.0 and t["br_heat"][3, 17, 12] == 1.0
    assert t["tl_heat"][[0, 1, 2, 4]].sum() == 0
    r = int(gaussian_radius(13, 10, 0.3))  # ceil(12.5) high, 10 wide
    sigma = (2 * r + 1) / 6
    assert t["tl_heat"][3, 5, 2 + r] == pytest.approx(math.exp(-r * r / (2 * sigma * sigma)), abs=1e-6)
    assert t["tl_heat"][3, 5, 2 + r + 1] == 0.0


def test_encode_targets_drops_and_clips():
    boxes = np.array([
        [100, 100, 120, 130],   # fine
        [600, 10, 700, 50],     # entirely right of the map -> dropped
        [30, 30, 30, 60],       # zero width -> dropped
        [-20, 500, 512, 560],   # clipped to the map; bottom-right on the far border
        [40, 40, 40.5, 40.5],   # tiny but positive area: kept, both corners in one cell
    ])
    t = encode_targets(boxes, np.array([0, 1, 1, 2, 0]), 3, (512, 512), (128, 128))
    assert t["keep"].tolist() == [0, 3, 4]
    assert t["labels"].tolist() == [0, 2, 0]
    for key in ("tl_index", "br_index", "tl_off", "br_off"):
        assert len(t[key]) == 3
    # the clipped box: tl (0, 125), br at the far border -> last cell + offset 1
    assert t["tl_index"][1] == 125 * 128 + 0
    assert t["br_index"][1] == 127 * 128 + 127
    np.testing.assert_allclose(t["br_off"][1], [1.0, 1.0])
    assert t["tl_index"][2] == t["br_index"][2] == 10 * 128 + 10
    np.testing.assert_allclose(t["br_off"][2] - t["tl_off"][2], [0.125, 0.125])


def test_encode_targets_many_objects_and_modes():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 400, (300, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, 100, (300, 2))], axis=1)
    labels = rng.integers(0, 4, 300)
    t = encode_targets(boxes, labels, 4, (511, 511), (128, 128))
    assert len(t["keep"]) == 300  # no cap at 128
    none = encode_targets(boxes, labels, 4, (511, 511), (128, 128), radius_mode="none")
    assert set(np.unique(none["tl_heat"]).tolist()) <= {0.0, 1.0}
    cells = {(c, i) for c, i in zip(labels, none["tl_index"])}
    assert none["tl_heat"].sum() == len(cells)
    fixed = encode_targets(boxes[:1], labels[:1], 4, (511, 511), (128, 128), radius_mode="fixed")
    assert (fixed["tl_heat"] > 0).sum() <= 25
    with pytest.raises(ValueError):
        encode_targets(boxes, labels, 4, (511, 511), (128, 128), radius_mode="big")
    with pytest.raises(ValueError):
        encode_targets(boxes[:1], [7], 4, (511, 511), (128, 128))


def test_gather_at_matches_loop():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 2, 5, 7, generator=g)
    index = torch.randint(0, 35, (3, 4), generator=g)
    out = gather_at(maps, index)
    assert out.shape == (3, 4, 2)
    for b in range(3):
        for m in range(4):
            y, x = divmod(int(index[b, m]), 7)
            assert torch.equal(out[b, m], maps[b, :, y, x])
