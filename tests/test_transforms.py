"""Augmentation geometry and colour, the test-time letterbox input, and the flip convention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cornernet_cli.data.transforms import (
    EIG_VAL,
    EIG_VEC,
    MEAN,
    STD,
    crop_matrix,
    fit_border,
    flip_boxes,
    flip_image,
    lighting,
    prepare_test_image,
    train_transform,
)

COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)


def _scene():
    image = np.full((300, 400, 3), 128, np.uint8)
    boxes = np.array([[40, 30, 140, 110], [200, 150, 330, 280], [300, 20, 390, 90]], dtype=np.float32)
    for (x1, y1, x2, y2), c in zip(boxes.astype(int), COLOURS):
        image[y1:y2, x1:x2] = c
    return image, boxes, np.arange(3)


def _denorm(t: torch.Tensor) -> np.ndarray:
    return (t.numpy().transpose(1, 2, 0) * STD + MEAN) * 255


@pytest.mark.parametrize("rotations", [{}, {"vflip": 0.5, "transpose": 0.5}])
def test_augmentation_keeps_boxes_on_their_objects(rotations):
    image, boxes, labels = _scene()
    checked = 0
    for seed in range(30):
        rng = np.random.default_rng(seed)
        out, new_boxes, new_labels = train_transform(image, boxes, labels, rng, input_size=(128, 128), border=64,
                                                     color=0.0, light=0.0, **rotations)
        assert out.shape == (3, 128, 128) and len(new_boxes) == len(new_labels)
        pix = _denorm(out)
        for (x1, y1, x2, y2), lab in zip(new_boxes, new_labels):
            match = (np.abs(pix - COLOURS[lab]).max(axis=2) < 40)
            inner = match[int(np.ceil(y1)) : int(y2), int(np.ceil(x1)) : int(x2)]
            if inner.size < 16:
                continue
            assert inner.mean() > 0.85, (seed, lab)
            # every pixel of that colour lies inside the box (up to a 1-pixel interpolation margin)
            ys, xs = np.nonzero(match)
            assert xs.min() >= x1 - 1.5 and xs.max() <= x2 + 0.5 and ys.min() >= y1 - 1.5 and ys.max() <= y2 + 0.5
            checked += 1
        # objects dropped by the crop leave no pixels behind
        for lab in set(labels) - set(new_labels.tolist()):
            assert (np.abs(pix - COLOURS[lab]).max(axis=2) < 40).sum() < 3
    assert checked > 30


def test_flip_is_a_mirror_of_the_unflipped_sample():
    image, boxes, labels = _scene()
    a = train_transform(image, boxes, labels, np.random.default_rng(3), input_size=(96, 128), flip=0.0)
    b = train_transform(image, boxes, labels, np.random.default_rng(3), input_size=(96, 128), flip=1.0)
    assert torch.allclose(flip_image(a[0]), b[0], atol=0.05)
    np.testing.assert_allclose(flip_boxes(a[1], 128), b[1], atol=1e-4)
    assert (a[2] == b[2]).all()


def test_flip_boxes_matches_pixels_and_output_scale():
    image, boxes, _ = _scene()
    flipped = image[:, ::-1]
    fb = flip_boxes(boxes, 400)
    for (x1, y1, x2, y2), c in zip(fb.astype(int), COLOURS):
        assert (flipped[y1:y2, x1:x2] == c).all()
    # the same mirror on the output map (decoder side): flip then scale == scale then flip at 511 -> 128
    r = 128 / 511
    np.testing.assert_allclose(flip_boxes(boxes * r, 128), flip_boxes(boxes, 511) * r, rtol=1e-6)
    assert (flip_boxes(flip_boxes(boxes, 77), 77) == boxes).all()


def test_crop_matrix_hand_values():
    m = crop_matrix(centre=(100, 50), crop_size=(40, 80), input_size=(20, 40), flip=False)
    # crop spans x 60..140, y 30..70, halved to the input
    np.testing.assert_allclose(m @ [60, 30, 1], [0, 0])
    np.testing.assert_allclose(m @ [140, 70, 1], [40, 20])
    mf = crop_matrix(centre=(100, 50), crop_size=(40, 80), input_size=(20, 40), flip=True)
    np.testing.assert_allclose(mf @ [60, 30, 1], [40, 0])
    assert fit_border(128, 511) == 128 and fit_border(128, 256) == 64 and fit_border(128, 100) == 32
    assert fit_border(128, 1) == 0


def test_scale_one_centre_crop_is_identity_on_pixels():
    image, boxes, labels = _scene()
    # scales (1,), no flip, no colour: the crop is a pure shift, so pixels equal the source window
    out, _, _ = train_transform(image, boxes, labels, np.random.default_rng(0), input_size=(100, 100),
                                 scales=(1.0,), border=0, flip=0.0, color=0.0, light=0.0)
    pix = np.rint(_denorm(out)).astype(int)
    rng = np.random.default_rng(0)  # replay the draws: scale index, then the centre
    rng.integers(1)  # the scale draw
    cx, cy = rng.integers(0, 400), rng.integers(0, 300)
    x0, y0 = cx - 50, cy - 50
    ref = np.full((100, 100, 3), MEAN * 255)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + 100, 400), min(y0 + 100, 300)
    ref[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    assert np.abs(pix - ref).max() <= 1


def test_lighting_matches_the_formula():
    img = np.zeros((2, 3, 3), np.float32)
    lighting(img, np.random.default_rng(7), 0.1)
    alpha = np.random.default_rng(7).normal(0, 0.1, 3)
    expected = [sum(EIG_VEC[c, j] * EIG_VAL[j] * alpha[j] for j in range(3)) for c in range(3)]
    np.testing.assert_allclose(img[1, 2], expected, rtol=1e-5)


def test_colour_off_keeps_pixels():
    image, boxes, labels = _scene()
    a = train_transform(image, boxes, labels, np.random.default_rng(1), input_size=(64, 64), color=0.0, light=0.0)
    b = train_transform(image, boxes, labels, np.random.default_rng(1), input_size=(64, 64), color=0.4, light=0.1)
    assert not torch.allclose(a[0], b[0]) and np.allclose(a[1], b[1])


def test_prepare_test_image_pads_with_zero_and_maps_back():
    image = np.random.default_rng(0).integers(0, 255, (100, 150, 3), dtype=np.uint8)
    t, info = prepare_test_image(image, scale=1.0)
    assert t.shape == (3, 127, 255) and info.input_size == (127, 255) and info.output_size == (32, 64)
    x0, y0 = info.offset
    assert torch.all(t[:, :, :x0].abs() < 1e-5) and torch.all(t[:, :y0].abs() < 1e-5)
    np.testing.assert_allclose(_denorm(t)[y0 : y0 + 100, x0 : x0 + 150], image, atol=1e-3)
    box = np.array([[10.0, 20.0, 110.0, 90.0]])
    out = info.image_to_input(box) * np.array([64 / 255, 32 / 127, 64 / 255, 32 / 127])
    np.testing.assert_allclose(info.output_to_image(out), box, atol=1e-6)
    t2, info2 = prepare_test_image(image, scale=0.5)
    assert info2.input_size == (127, 127) and t2.shape == (3, 127, 127)


def test_vflip_and_transpose_are_mirror_and_transposition_of_the_plain_sample():
    image, boxes, labels = _scene()
    kw = dict(input_size=(112, 112), flip=0.0, color=0.0, light=0.0)
    a = train_transform(image, boxes, labels, np.random.default_rng(4), **kw)
    v = train_transform(image, boxes, labels, np.random.default_rng(4), vflip=1.0, **kw)
    t = train_transform(image, boxes, labels, np.random.default_rng(4), transpose=1.0, **kw)
    assert len(a[1]) >= 1
    assert torch.allclose(torch.flip(a[0], dims=[-2]), v[0], atol=0.05)
    np.testing.assert_allclose(v[1], np.stack([a[1][:, 0], 112 - a[1][:, 3], a[1][:, 2], 112 - a[1][:, 1]], 1),
                               atol=1e-4)
    assert torch.allclose(a[0].transpose(-1, -2), t[0], atol=0.05)
    np.testing.assert_allclose(t[1], a[1][:, [1, 0, 3, 2]], atol=1e-4)
    assert (a[2] == v[2]).all() and (a[2] == t[2]).all()


def test_crop_matrix_transpose_and_vflip_hand_values():
    m = crop_matrix(centre=(100, 50), crop_size=(40, 40), input_size=(20, 20), flip=False, transpose=True)
    # crop spans x 80..120, y 30..70, halved; then x and y swap
    np.testing.assert_allclose(m @ [80, 30, 1], [0, 0])
    np.testing.assert_allclose(m @ [120, 30, 1], [0, 20])
    mv = crop_matrix(centre=(100, 50), crop_size=(40, 40), input_size=(20, 20), flip=True, vflip=True)
    np.testing.assert_allclose(mv @ [80, 30, 1], [20, 20])  # a 180-degree rotation
    with pytest.raises(ValueError, match="square"):
        crop_matrix(centre=(0, 0), crop_size=(4, 8), input_size=(2, 4), flip=False, transpose=True)

