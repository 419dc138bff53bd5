"""The optional centre head (CenterNet-style keypoint triplets, not in the paper): targets, the decoder's
centre check against NumPy loops (tests/reference.py), the rejection of a pair spanning two neighbours, loss,
training, export."""

import json

import numpy as np
import pytest
import torch

from cornernet_cli.decode import decode
from cornernet_cli.losses import CornerNetLoss, focal_loss
from cornernet_cli.model import build_model
from cornernet_cli.model.cornernet import CornerOutputs
from cornernet_cli.targets import encode_targets
from tests.reference import assert_same_rows, centre_check_reference, decode_reference, local_maxima_topk
from tests.support import require_module


def test_centre_targets_give_back_the_box_centres():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 200, (12, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(2, 60, (12, 2))], axis=1)
    boxes[3] = [50, 50, 50, 80]  # zero width: dropped from every array
    labels = rng.integers(0, 4, 12)
    t = encode_targets(boxes, labels, 4, (256, 256), (64, 64), centres=True)
    assert 3 not in t["keep"] and len(t["ct_index"]) == len(t["keep"]) == 11
    kept = np.clip(boxes[t["keep"]] / 4, 0, 64)
    centre = (kept[:, :2] + kept[:, 2:]) / 2
    cells = np.stack([t["ct_index"] % 64, t["ct_index"] // 64], axis=1)
    np.testing.assert_allclose(cells + t["ct_off"], centre, atol=1e-5)
    assert (t["ct_off"] >= 0).all() and (t["ct_off"] < 1).all()
    for label, (x, y) in zip(t["labels"], cells):
        assert t["ct_heat"][label, y, x] == 1.0
    assert "ct_heat" not in encode_targets(boxes, labels, 4, (256, 256), (64, 64))


@pytest.mark.parametrize("centre_n", [3.0, 5.0])
def test_centre_check_matches_the_reference(centre_n):
    """decode with centre heads against tests/reference.py: corners, pairs and centres all found by NumPy loops."""
    g = torch.Generator().manual_seed(1)
    b, c, h, w = 2, 2, 12, 14
    k = 30
    heads = [torch.randn(b, c, h, w, generator=g), torch.randn(b, c, h, w, generator=g),
             torch.zeros(b, 1, h, w), torch.zeros(b, 1, h, w),  # every same-class, upright pair is a box
             torch.rand(b, 2, h, w, generator=g), torch.rand(b, 2, h, w, generator=g)]
    ct_heat, ct_off = torch.randn(b, c, h, w, generator=g), torch.rand(b, 2, h, w, generator=g)
    # k centres that are all local maxima: where a map has fewer, non-maxima scored 0 fill the top k and
    # which ones is arbitrary (see assert_same_rows)
    assert all(len(local_maxima_topk(m, k=k)) == k for m in ct_heat.numpy())
    got = decode(*heads, ct_heat, ct_off, k=k, ae_threshold=1.0, num_dets=k * k, centre_n=centre_n)
    pairs = decode_reference(*(t.numpy() for t in heads), k=k, ae_threshold=1.0)
    want = centre_check_reference(pairs, ct_heat.numpy(), ct_off.numpy(), k=k, centre_n=centre_n)
    kept, dropped = sum(len(x) for x in want), sum(len(x) for x in pairs) - sum(len(x) for x in want)
    assert kept > 10 and dropped > 50  # both outcomes occur
    assert_same_rows(got, want)
    # without centre offsets every centre sits in its cell's middle
    got = decode(*heads, ct_heat, None, k=k, ae_threshold=1.0, num_dets=k * k, centre_n=centre_n)
    assert_same_rows(got, centre_check_reference(pairs, ct_heat.numpy(), None, k=k, centre_n=centre_n))


def test_centre_check_without_offsets_uses_the_cell_centre():
    g = torch.Generator().manual_seed(2)
    heads = [torch.randn(1, 1, 10, 10, generator=g), torch.randn(1, 1, 10, 10, generator=g),
             torch.zeros(1, 1, 10, 10), torch.zeros(1, 1, 10, 10), torch.rand(1, 2, 10, 10, generator=g),
             torch.rand(1, 2, 10, 10, generator=g)]
    ct_heat = torch.randn(1, 1, 10, 10, generator=g)
    got = decode(*heads, ct_heat, None, k=40)
    assert (got[..., 4] >= 0).sum() > 10
    torch.testing.assert_close(got, decode(*heads, ct_heat, torch.full((1, 2, 10, 10), 0.5), k=40))


def _logit(p):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return torch.from_numpy(np.log(p / (1 - p)).astype(np.float32))[None]


def test_centre_check_drops_a_pair_spanning_two_neighbours():
    # Two touching objects of one class whose four corners share one embedding: the corner pairing alone
    # also accepts the box from the left object's top-left to the right object's bottom-right.
    boxes = np.array([[2.3, 4.2, 7.6, 9.4], [8.2, 4.7, 13.5, 9.6]])
    t = encode_targets(boxes, [0, 0], 1, (16, 16), (16, 16), centres=True)
    zeros = torch.zeros(1, 1, 16, 16)

    def offsets(kind):
        off = torch.zeros(1, 2, 256)
        off[0, :, torch.from_numpy(t[f"{kind}_index"])] = torch.from_numpy(t[f"{kind}_off"]).T
        return off.view(1, 2, 16, 16)

    heads = CornerOutputs(_logit(t["tl_heat"]), _logit(t["br_heat"]), zeros, zeros, offsets("tl"), offsets("br"),
                          ct_heat=_logit(t["ct_heat"]), ct_off=offsets("ct"))

    def confident(dets):
        d = dets[0][dets[0, :, 4] > 0.7]
        return sorted(tuple(round(v, 3) for v in row[:4].tolist()) for row in d)

    spanning = (2.3, 4.2, 13.5, 9.6)
    assert len(heads.corners()) == 6 and spanning in confident(decode(*heads.corners(), k=10))
    assert confident(decode(*heads.heads(), k=10)) == sorted(tuple(b) for b in boxes.tolist())


def test_oracle_heatmaps_cover_the_centre_head():
    from cornernet_cli.engine.oracle import oracle_outputs

    boxes = [np.array([[4.0, 8.0, 40.0, 30.0], [30.0, 36.0, 60.0, 62.0]])]
    predicted = build_model("tiny", num_classes=2, centre_head=True).eval()(torch.zeros(1, 3, 64, 64))[-1]
    t = encode_targets(boxes[0], [0, 1], 2, (64, 64), (16, 16), centres=True)
    for mode, want_off in (("heatmaps", predicted.ct_off), ("heatmaps+offsets", None)):
        out = oracle_outputs(boxes, [np.array([0, 1])], num_classes=2, input_size=(64, 64), output_size=(16, 16),
                             mode=mode, predicted=predicted)
        np.testing.assert_allclose(torch.sigmoid(out.ct_heat[0]).numpy(), t["ct_heat"], atol=1e-5)
        if want_off is not None:
            torch.testing.assert_close(out.ct_off, want_off)
        else:
            got = out.ct_off[0].reshape(2, -1)[:, torch.from_numpy(t["ct_index"])].T
            torch.testing.assert_close(got, torch.from_numpy(t["ct_off"]))


def _batch_with_centres(b, n, size, classes, seed):
    rng = np.random.default_rng(seed)
    out = {k: [] for k in ("tl_heat", "br_heat", "ct_heat", "tl_index", "br_index", "ct_index",
                           "tl_off", "br_off", "ct_off")}
    for _ in range(b):
        xy = rng.uniform(0, size * 3 // 4, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(4, size // 4, (n, 2))], axis=1)
        t = encode_targets(boxes, rng.integers(0, classes, n), classes, (size, size), (size // 4, size // 4),
                           centres=True)
        for k in out:
            out[k].append(torch.from_numpy(t[k]))
    batch = {k: torch.stack(v) for k, v in out.items()}
    batch["mask"] = torch.ones(b, n, dtype=torch.bool)
    return batch


def test_loss_adds_the_centre_terms():
    torch.manual_seed(0)
    model = build_model("tiny", num_classes=3, centre_head=True)
    outputs = model(torch.randn(2, 3, 64, 64))
    assert all(o.ct_heat.shape == (2, 3, 16, 16) and o.ct_off.shape == (2, 2, 16, 16) for o in outputs)
    batch = _batch_with_centres(2, 4, 64, 3, seed=0)
    total, terms = CornerNetLoss()(outputs, batch)
    corners_only = [CornerOutputs(*o.corners()) for o in outputs]  # the six corner heads alone
    _, base = CornerNetLoss()(corners_only, batch)
    ct_focal = sum(float(focal_loss(o.ct_heat.detach(), batch["ct_heat"])) for o in outputs)
    assert float(terms["focal"]) == pytest.approx(float(base["focal"]) + ct_focal, rel=1e-5)
    assert float(terms["offset"]) > float(base["offset"])
    total.backward()
    assert model.predictions[0].ct_heat[2].weight.grad.abs().sum() > 0
    batch = {k: v for k, v in batch.items() if not k.startswith("ct_")}
    with pytest.raises(ValueError, match="centre targets"):
        CornerNetLoss()(outputs, batch)


def test_cli_trains_evaluates_and_exports_a_centre_head(tmp_path):
    from typer.testing import CliRunner

    from cornernet_cli.cli import app
    from cornernet_cli.data.synthetic import write_synthetic_dataset
    from cornernet_cli.engine.checkpoint import load_model

    data = tmp_path / "syn"
    write_synthetic_dataset(data, num_train=8, num_val=3, image_size=96, seed=1)
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--data", str(data), "--preset", "tiny", "--input-size", "64",
                                 "--batch-size", "2", "--iters", "3", "--workers", "0", "--device", "cpu",
                                 "--centre-head", "--out", str(run)])
    assert r.exit_code == 0, r.output
    assert json.loads((run / "config.json").read_text())["model"]["centre_head"] is True
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(row["loss"]) for row in rows if "loss" in row)
    model, meta = load_model(run / "last.safetensors")
    assert meta["model_config"].centre_head and model.predictions[-1].ct_heat is not None
    for flag, expect in (("--centre-check", True), ("--no-centre-check", False)):
        out = tmp_path / flag / "results.json"
        r = CliRunner().invoke(app, ["eval", "--checkpoint", str(run / "last.safetensors"), "--data", str(data),
                                     "--no-flip", flag, "--out", str(out)])
        assert r.exit_code == 0, r.output
        assert json.loads(out.with_name("metrics.json").read_text())["centre_check"] is expect

    onnx = require_module("onnx")
    ort = require_module("onnxruntime")
    from cornernet_cli.export import CENTRE_NAMES, OUTPUT_NAMES, export_onnx

    summary = export_onnx(run / "last.safetensors", tmp_path / "m.onnx", height=64, width=64)
    assert summary.max_abs_diff is not None and summary.max_abs_diff <= 1e-4
    assert [o.name for o in onnx.load(str(tmp_path / "m.onnx")).graph.output] == list(OUTPUT_NAMES + CENTRE_NAMES)
    images = torch.randn(1, 3, 64, 64)
    heads = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"images": images.numpy()})
    got = CornerOutputs.from_heads(torch.from_numpy(h) for h in heads)
    with torch.no_grad():
        want = model.eval()(images)[-1]
    assert got.has_centre and len(got.corners()) == 6 and len(got.heads()) == 8
    torch.testing.assert_close(got.ct_heat, want.ct_heat, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.ct_off, want.ct_off, atol=1e-4, rtol=0)
    assert not CornerOutputs.from_heads(heads[:6]).has_centre
    with pytest.raises(ValueError, match="expected 6 head tensors"):
        CornerOutputs.from_heads(heads[:7])


def test_centre_region_boundaries_by_hand():
    # One box from (0, 0) to (9, 9) in output cells; with n = 3 its middle third is [3, 6] in x and y.
    # A centre at 3.0 or 6.0 keeps it, at 2.9 or 6.1 it is dropped; with n = 1 the whole box counts.
    from cornernet_cli.decode import _centre_check

    dets = torch.tensor([[[0.0, 0.0, 9.0, 9.0, 0.8, 0.9, 0.7, 0.0]]])
    for x, n, kept in ((3.0, 3.0, True), (6.0, 3.0, True), (2.9, 3.0, False), (6.1, 3.0, False),
                       (0.5, 1.0, True)):
        ct_heat = torch.full((1, 1, 12, 12), -10.0)
        ct_heat[0, 0, 4, int(x)] = 0.0  # sigmoid 0.5, at row 4 (inside in y)
        ct_off = torch.zeros(1, 2, 12, 12)
        ct_off[0, 0, 4, int(x)] = x - int(x)
        out = _centre_check(dets, ct_heat, ct_off, k=5, kernel=3, centre_n=n)
        want = (0.9 + 0.7 + 0.5) / 3 if kept else -1.0
        assert float(out[0, 0, 4]) == pytest.approx(want), (x, n)


def test_decode_refuses_mismatched_centre_heads_and_bad_region():
    heads = [torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8), torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8),
             torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8)]
    with pytest.raises(ValueError, match="do not match"):
        decode(*heads, torch.zeros(1, 2, 4, 4), None, k=5)
    with pytest.raises(ValueError, match="do not match"):
        decode(*heads, torch.zeros(1, 3, 8, 8), None, k=5)
    with pytest.raises(ValueError, match="do not match"):
        decode(*heads, torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 4, 4), k=5)
    for bad in (0.5, float("nan")):
        with pytest.raises(ValueError, match="centre_n"):
            decode(*heads, torch.zeros(1, 2, 8, 8), None, k=5, centre_n=bad)


def test_centre_outputs_keep_their_centre_heads_when_copied():
    import copy
    import dataclasses
    import pickle

    from torch.utils._pytree import tree_flatten, tree_unflatten

    six = [torch.full((1, 1, 2, 2), float(i)) for i in range(6)]
    o = CornerOutputs(*six, ct_heat=torch.ones(1, 1, 2, 2), ct_off=torch.zeros(1, 2, 2, 2))
    leaves, spec = tree_flatten([o])
    round_trip = tree_unflatten(leaves, spec)[0]
    for other in (copy.copy(o), copy.deepcopy(o), pickle.loads(pickle.dumps(o)), dataclasses.replace(o, tl_emb=six[0]),
                  o.map(torch.clone), round_trip):
        assert isinstance(other, CornerOutputs) and len(other.corners()) == 6
        torch.testing.assert_close(other.ct_heat, o.ct_heat)
        torch.testing.assert_close(other.ct_off, o.ct_off)
    assert len(leaves) == 8
    assert dataclasses.replace(o, ct_heat=six[0]).ct_heat is six[0]


def test_detect_images_with_a_centre_model_flip_and_scales():
    from cornernet_cli.config import DecodeConfig
    from cornernet_cli.decoder import Decoder
    from cornernet_cli.engine.inference import detect_images

    torch.manual_seed(0)
    model = build_model("tiny", num_classes=2, centre_head=True).eval()
    model = model.to(memory_format=torch.channels_last)
    images = [np.random.default_rng(i).integers(0, 255, (70 + 9 * i, 90, 3), dtype=np.uint8) for i in range(2)]
    on = detect_images(model, images, scales=(0.75, 1.0), flip=True,
                       decoder=Decoder.for_network(DecodeConfig(), model.config))
    off = detect_images(model, images, scales=(0.75, 1.0), flip=True,
                        decoder=Decoder.for_network(DecodeConfig(centre_check=False), model.config))
    for a, b in zip(on, off):
        assert len(a) and len(b) and a.shape[1] == b.shape[1] == 6
        assert not (len(a) == len(b) and np.allclose(a, b))  # the check changed what came out


def test_config_omits_centre_head_when_off():
    from cornernet_cli.config import ModelConfig, model_config

    plain, centre = model_config("tiny", 3), model_config("tiny", 3, centre_head=True)
    assert "centre_head" not in plain.to_dict()  # readable by versions before the centre head
    assert centre.to_dict()["centre_head"] is True
    assert ModelConfig.from_dict(plain.to_dict()) == plain and ModelConfig.from_dict(centre.to_dict()) == centre
