"""cornernet visualize-heatmaps: a readable PNG, ground-truth lookup, the output-cell geometry."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cornernet_cli.cli import app
from cornernet_cli.data.letterbox import letterbox
from cornernet_cli.errors import CornerNetError
from cornernet_cli.visualize import cell_lookup, find_ground_truth
from tests.test_evaluate import make_trained_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return make_trained_run(tmp_path_factory.mktemp("vis"))


def test_png_with_ground_truth(trained, tmp_path):
    data, ckpt = trained
    out = tmp_path / "v.png"
    r = CliRunner().invoke(app, ["visualize-heatmaps", str(data / "images" / "val" / "000001.jpg"), "--checkpoint",
                                 str(ckpt), "--gt", str(data), "--out", str(out)])
    assert r.exit_code == 0, r.output
    png = cv2.imread(str(out))
    assert png is not None and png.shape[0] > 600 and png.shape[1] > 1500
    assert png.std() > 20  # not a blank canvas


def test_unknown_class_is_an_error(trained, tmp_path):
    data, ckpt = trained
    r = CliRunner().invoke(app, ["visualize-heatmaps", str(data / "images" / "val" / "000001.jpg"), "--checkpoint",
                                 str(ckpt), "--classes", "zebra", "--out", str(tmp_path / "v.png")])
    assert r.exit_code != 0 and isinstance(r.exception, CornerNetError) and "zebra" in str(r.exception)


def test_ground_truth_prefers_the_longest_matching_path(tmp_path):
    (tmp_path / "annotations").mkdir()
    cats = [{"id": 3, "name": "cat"}]
    for split, box in (("train", [1, 2, 3, 4]), ("val", [5, 6, 7, 8])):
        doc = {"images": [{"id": 1, "file_name": f"images/{split}/0001.jpg", "width": 20, "height": 20}],
               "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": box, "iscrowd": 0}],
               "categories": cats}
        (tmp_path / "annotations" / f"{split}.json").write_text(json.dumps(doc))
    boxes, names = find_ground_truth(tmp_path, tmp_path / "images" / "val" / "0001.jpg")
    assert boxes.tolist() == [[5, 6, 12, 14]] and names == ["cat"]
    with pytest.raises(CornerNetError, match="other.jpg"):
        find_ground_truth(tmp_path, tmp_path / "other.jpg")


def test_cell_lookup_matches_the_letterbox():
    image = np.zeros((50, 70, 3), np.uint8)
    _, lb = letterbox(image, 1.0)
    rows, cols = cell_lookup(lb)
    # Independent: pixel centre -> padded input -> output map by the ratio output / input.
    for x in (0, 13, 69):
        expect = int(((x + 0.5) + lb.offset[0]) * lb.output_size[1] / lb.input_size[1])
        assert cols[x] == expect
    for y in (0, 49):
        assert rows[y] == int(((y + 0.5) + lb.offset[1]) * lb.output_size[0] / lb.input_size[0])
    assert rows.shape == (50,) and cols.shape == (70,)
