"""Losses: hand-worked values on tiny tensors, batch size 1, stability from logits."""

import math

import pytest
import torch

from cornernet_cli.losses import CornerNetLoss, embedding_loss, focal_loss, offset_loss
from cornernet_cli.model.cornernet import CornerOutputs

LN2 = math.log(2)


def test_focal_hand_worked():
    logits = torch.zeros(1, 1, 1, 3)  # p = 0.5 everywhere
    target = torch.tensor([1.0, 0.5, 0.0]).view(1, 1, 1, 3)
    pos = 0.25 * LN2                 # (1 - p)^2 * -log p
    neg_half = 0.5**4 * 0.25 * LN2   # (1 - t)^4 p^2 * -log(1 - p)
    neg_zero = 0.25 * LN2
    assert focal_loss(logits, target).item() == pytest.approx(pos + neg_half + neg_zero, rel=1e-6)
    # no positive: the negative term alone, not divided
    target0 = torch.tensor([0.5, 0.5, 0.0]).view(1, 1, 1, 3)
    assert focal_loss(logits, target0).item() == pytest.approx(2 * neg_half + neg_zero, rel=1e-6)
    # two positives over a batch of two: normalised by 2
    both = focal_loss(torch.zeros(2, 1, 1, 3), torch.cat([target, target]))
    assert both.item() == pytest.approx(pos + neg_half + neg_zero, rel=1e-6)


def _clamped_focal(logits, target):
    p = torch.sigmoid(logits.double()).clamp(1e-4, 1 - 1e-4)
    t = target.double()
    pos = t.eq(1)
    pos_loss = (torch.log(p) * (1 - p) ** 2)[pos].sum()
    neg_loss = (torch.log(1 - p) * p**2 * (1 - t) ** 4)[~pos].sum()
    n = pos.sum()
    return -(pos_loss + neg_loss) / n if n > 0 else -neg_loss


def test_focal_equals_clamped_form_and_stays_finite():
    g = torch.Generator().manual_seed(0)
    logits = (torch.rand(2, 3, 8, 8, generator=g) * 2 - 1) * 8.9
    target = torch.rand(2, 3, 8, 8, generator=g) ** 3
    target[0, 1, 2, 3] = target[1, 2, 5, 5] = target[1, 0, 0, 0] = 1
    assert focal_loss(logits, target).item() == pytest.approx(_clamped_focal(logits, target).item(), rel=1e-5)
    extreme = (logits * 100).to(torch.bfloat16).requires_grad_()
    loss = focal_loss(extreme, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(extreme.grad.float()).all()
    assert loss.dtype == torch.float32


def test_embedding_hand_worked_batch_one():
    tl = torch.tensor([[0.0, 0.5]])
    br = torch.tensor([[0.2, 0.9]])
    mask = torch.tensor([[True, True]])
    pull, push = embedding_loss(tl, br, mask)
    # means 0.1, 0.7; pull = (0.01 + 0.01 + 0.04 + 0.04) / 2; push = 2 * (1 - 0.6) / (2 * 1)
    assert pull.item() == pytest.approx(0.05, abs=1e-6)
    assert push.item() == pytest.approx(0.4, abs=1e-6)
    far_pull, far_push = embedding_loss(torch.tensor([[0.0, 3.0]]), torch.tensor([[0.0, 3.0]]), mask)
    assert far_pull.item() == 0 and far_push.item() == 0


def test_embedding_zero_and_one_object_and_batch_sum():
    tl = torch.tensor([[0.0, 0.5, 9.0], [1.0, 7.0, 7.0], [3.0, 3.0, 3.0]])
    br = torch.tensor([[0.2, 0.9, 9.0], [2.0, 7.0, 7.0], [5.0, 5.0, 5.0]])
    mask = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    pull, push = embedding_loss(tl.unsqueeze(-1), br.unsqueeze(-1), mask)
    # image 0 as above; image 1: one object, pull = 0.25 + 0.25, push 0; image 2: nothing
    assert pull.item() == pytest.approx(0.05 + 0.5, abs=1e-6)
    assert push.item() == pytest.approx(0.4, abs=1e-6)


def test_offset_hand_worked():
    pred = torch.tensor([[[0.5, 0.2], [3.0, -2.0]]])
    target = torch.zeros(1, 2, 2)
    target[0, 0, 1] = 2.0  # |0.2 - 2| = 1.8 -> 1.8 - 0.5 = 1.3
    mask = torch.tensor([[True, False]])
    expect = (0.5 * 0.25 + 1.3) / (1 + 1e-4)
    assert offset_loss(pred, target, mask).item() == pytest.approx(expect, rel=1e-6)


def _outputs(seed, b=1, c=2, h=4, w=5):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, requires_grad=True)  # noqa: E731
    return CornerOutputs(r(b, c, h, w), r(b, c, h, w), r(b, 1, h, w), r(b, 1, h, w), r(b, 2, h, w), r(b, 2, h, w))


def test_cornernet_loss_sums_stacks_with_weights():
    stacks = [_outputs(1), _outputs(2)]
    heat = torch.zeros(1, 2, 4, 5)
    heat[0, 1, 1, 2] = 1
    batch = {
        "tl_heat": heat, "br_heat": heat.flip(-1),
        "tl_index": torch.tensor([[7, 0]]), "br_index": torch.tensor([[12, 0]]),
        "tl_off": torch.rand(1, 2, 2), "br_off": torch.rand(1, 2, 2),
        "mask": torch.tensor([[True, False]]),
    }
    total, terms = CornerNetLoss(pull_weight=0.1, push_weight=0.1, offset_weight=1.0)(stacks, batch)
    focal = pull = push = off = 0.0
    for o in stacks:
        focal += focal_loss(o.tl_heat, batch["tl_heat"]).item() + focal_loss(o.br_heat, batch["br_heat"]).item()
        tl_e = o.tl_emb.reshape(1, -1)[:, [7, 0]]
        br_e = o.br_emb.reshape(1, -1)[:, [12, 0]]
        p, q = embedding_loss(tl_e, br_e, batch["mask"])
        pull, push = pull + p.item(), push + q.item()
        tl_o = o.tl_off.reshape(1, 2, -1)[:, :, [7, 0]].transpose(1, 2)
        br_o = o.br_off.reshape(1, 2, -1)[:, :, [12, 0]].transpose(1, 2)
        off += offset_loss(tl_o, batch["tl_off"], batch["mask"]).item()
        off += offset_loss(br_o, batch["br_off"], batch["mask"]).item()
    assert terms["focal"].item() == pytest.approx(focal, rel=1e-6)
    assert terms["pull"].item() == pytest.approx(0.1 * pull, rel=1e-6, abs=1e-9)
    assert terms["push"].item() == 0.0  # one object: no push
    assert terms["offset"].item() == pytest.approx(off, rel=1e-6)
    assert total.item() == pytest.approx(sum(float(v) for v in terms.values()), rel=1e-6)
    total.backward()
    assert all(torch.isfinite(t.grad).all() for o in stacks for t in o.heads())
