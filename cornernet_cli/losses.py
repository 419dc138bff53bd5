"""CornerNet training losses (paper section 3.2 and 3.3).

L = L_det + pull_weight * L_pull + push_weight * L_push + offset_weight * L_off, each summed over
the stacks (intermediate supervision). Deliberate differences from the original code: the focal loss
works on logits (finite under bf16/fp16 autocast); the embedding loss works for batch size 1 and
gives push = 0 for images with fewer than two objects (the original returned ~1 there); the original
also divided the total by the number of stacks, which only rescales the loss (Adam is invariant).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cornernet_cli.targets import gather_at


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """The paper's variant of focal loss, summed over cells and normalised by the positives.

    logits: [B, C, h, w] raw heatmap outputs; target: same shape, 1 at corners, gaussian bumps in (0, 1)
    around them. With p = sigmoid(logit):
    positives (target == 1): -(1 - p)^alpha log p; negatives: -(1 - target)^beta p^alpha log(1 - p).
    Returns the sum over the whole batch divided by the number of positive cells, or the negative term
    alone when there is none (scalar, float32). log p and log(1 - p) come from log-sigmoid, so it equals
    the original clamped-probability form (p clamped to [1e-4, 1 - 1e-4]) for |logit| < 9 and stays
    finite for any logit.
    """
    x = logits.float()
    t = target.float()
    pos = t.eq(1)
    log_p, log_1mp = F.logsigmoid(x), F.logsigmoid(-x)
    p, one_minus_p = torch.exp(log_p), torch.exp(log_1mp)
    pos_term = torch.where(pos, log_p * one_minus_p.pow(alpha), torch.zeros_like(x))
    neg_term = torch.where(pos, torch.zeros_like(x), log_1mp * p.pow(alpha) * (1 - t).pow(beta))
    num_pos = pos.sum().clamp(min=1).float()  # no positives: pos_term is 0, the negative term alone
    return -(pos_term.sum() + neg_term.sum()) / num_pos


def embedding_loss(tl_emb: torch.Tensor, br_emb: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Associative-embedding pull and push losses (Delta = 1), per image, summed over the batch.

    tl_emb, br_emb: [B, M] (or [B, M, 1]) embeddings gathered at each object's corners; mask: [B, M] bool,
    True for real objects. For an image with N objects, e_k = (tl_k + br_k) / 2:
    pull = 1/N sum_k (tl_k - e_k)^2 + (br_k - e_k)^2 (0 when N = 0);
    push = 1/(N (N - 1)) sum_{j != k} max(0, 1 - |e_j - e_k|) (0 when N < 2).
    Returns (pull, push) scalars.
    """
    if tl_emb.dim() == 3:
        tl_emb, br_emb = tl_emb.squeeze(-1), br_emb.squeeze(-1)
    tl, br = tl_emb.float(), br_emb.float()
    m = mask.to(tl.dtype)
    n = m.sum(dim=1)
    mean = (tl + br) / 2
    pull_per = (((tl - mean) ** 2 + (br - mean) ** 2) * m).sum(dim=1) / n.clamp(min=1)
    eye = torch.eye(m.shape[1], dtype=m.dtype, device=m.device)
    pair_mask = m.unsqueeze(1) * m.unsqueeze(2) * (1 - eye)
    gap = F.relu(1 - (mean.unsqueeze(1) - mean.unsqueeze(2)).abs())
    push_per = (gap * pair_mask).sum(dim=(1, 2)) / (n * (n - 1)).clamp(min=1)
    return pull_per.sum(), push_per.sum()


def offset_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 (beta 1) offset loss: pred, target [B, M, 2] (x, y, output pixels), mask [B, M] bool.

    Sum over valid objects and both coordinates, divided by (number of valid objects + 1e-4).
    """
    per = F.smooth_l1_loss(pred.float(), target.float(), reduction="none", beta=1.0).sum(dim=-1)
    m = mask.to(per.dtype)
    return (per * m).sum() / (m.sum() + 1e-4)


class CornerNetLoss(nn.Module):
    """The full CornerNet loss over all stacks.

    forward(outputs, batch):
      outputs: list of CornerOutputs (one per stack; a single CornerOutputs is accepted), with
        tl_heat, br_heat [B, C, h, w] logits, tl_emb, br_emb [B, 1, h, w], tl_off, br_off [B, 2, h, w].
      batch: dict of tensors
        tl_heat, br_heat [B, C, h, w] float targets (encode_targets);
        tl_index, br_index [B, M] long, flat y * w + x (any valid value, e.g. 0, where mask is False);
        tl_off, br_off [B, M, 2] float (x, y) offset targets;
        mask [B, M] bool, True for real objects;
        with a centre head (outputs carry ct_heat / ct_off) also ct_heat, ct_index, ct_off, built the same way.
    Returns (total, terms): total is a scalar tensor with gradient; terms maps "focal", "pull", "push",
    "offset" to detached scalar tensors, already weighted, summing to total. Per stack: focal(tl) +
    focal(br); pull/push from the tl/br embeddings; offset(tl) + offset(br); with a centre head, focal(ct) joins
    "focal" and offset(ct) joins "offset".
    """

    def __init__(self, *, pull_weight: float = 0.1, push_weight: float = 0.1, offset_weight: float = 1.0):
        super().__init__()
        self.pull_weight = pull_weight
        self.push_weight = push_weight
        self.offset_weight = offset_weight

    def forward(self, outputs, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if hasattr(outputs, "tl_heat"):
            outputs = [outputs]
        mask = batch["mask"].bool()
        tl_index, br_index = batch["tl_index"].long(), batch["br_index"].long()
        focal = pull = push = offset = torch.zeros((), device=mask.device)
        for out in outputs:
            focal = focal + focal_loss(out.tl_heat, batch["tl_heat"]) + focal_loss(out.br_heat, batch["br_heat"])
            p, q = embedding_loss(gather_at(out.tl_emb, tl_index), gather_at(out.br_emb, br_index), mask)
            pull, push = pull + p, push + q
            offset = (offset + offset_loss(gather_at(out.tl_off, tl_index), batch["tl_off"], mask)
                      + offset_loss(gather_at(out.br_off, br_index), batch["br_off"], mask))
            if out.ct_heat is not None:
                if "ct_heat" not in batch:
                    raise ValueError("the model has a centre head but the batch has no centre targets (ct_heat)")
                focal = focal + focal_loss(out.ct_heat, batch["ct_heat"])
                offset = offset + offset_loss(gather_at(out.ct_off, batch["ct_index"].long()), batch["ct_off"], mask)
        terms = {
            "focal": focal,
            "pull": self.pull_weight * pull,
            "push": self.push_weight * push,
            "offset": self.offset_weight * offset,
        }
        total = terms["focal"] + terms["pull"] + terms["push"] + terms["offset"]
        return total, {name: value.detach() for name, value in terms.items()}
