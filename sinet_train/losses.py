"""The SINet training objective (paper Sec. 4.2; exactly as the released ``utils/losses.py`` and ``main.py``).

``L = L_ce + L_tri + lambda2 * L_frame``:

* ``L_ce``: cross-entropy of the identity classifier on the clip embedding (no label smoothing, as released);
* ``L_tri``: batch-hard triplet loss on the BN-neck clip embedding with cosine distance and margin 0.3;
* ``L_frame``: the frame-level supervised InfoNCE of the salient-to-broad transition (weight lambda2): within each
  identity's group of clips, frames at the same position are positives and the identity's frames at the other
  positions are negatives. The released code weighs it by 0.001 (the paper's text says 0.01); it only exists for
  models with a frame projection (SBNet, SINet). IDNet, the baseline and SANet train with ``L_ce + L_tri``, as
  released (SANet's recipe is SINet's otherwise).

All losses are computed in float32, also under autocast.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from sinet_timm import SINetOutput

__all__ = [
    'RELEASED_FRAME_LOSS_WEIGHT', 'PAPER_FRAME_LOSS_WEIGHT', 'batch_hard_triplet_loss', 'frame_infonce_loss',
    'LossParts', 'SINetCriterion',
]

RELEASED_FRAME_LOSS_WEIGHT = 0.001  # released main.py: loss = xent + htri + 0.001 * info
PAPER_FRAME_LOSS_WEIGHT = 0.01  # paper Sec. 4.2: lambda2 = 0.01


def batch_hard_triplet_loss(embeddings: torch.Tensor, pids: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Batch-hard triplet loss with cosine distance (paper Sec. 4.2; released ``TripletLoss``).

    The distance is ``d = -cos`` of the L2-normalised embeddings. For every anchor the hardest positive is the
    largest ``d`` over same-identity entries (the anchor itself included, as released, where ``d = -1``) and the
    hardest negative the smallest ``d`` over other identities; the loss is
    ``mean(max(0, d_ap - d_an + margin))`` (``nn.MarginRankingLoss`` with target 1).

    Args:
        embeddings: (B, C) clip embeddings.
        pids: (B,) identity labels; the batch needs at least two identities.
        margin: the triplet margin (0.3).
    """
    x = F.normalize(embeddings.float(), dim=-1)
    dist = -x @ x.t()
    same = pids[:, None].eq(pids[None, :])
    # released masking: non-positives count as -1 for the max, non-negatives as +1 for the min
    dist_ap = torch.where(same, dist, torch.full_like(dist, -1.0)).amax(dim=1)
    dist_an = torch.where(same, torch.full_like(dist, 1.0), dist).amin(dim=1)
    return F.margin_ranking_loss(dist_an, dist_ap, torch.ones_like(dist_an), margin=margin)


def frame_infonce_loss(
        frame_features: torch.Tensor,
        num_instances: int,
        temperature: float = 0.07,
        clip_len: int = 4,
) -> torch.Tensor:
    """Frame-level supervised InfoNCE over identity groups (paper's lambda2 term, Sec. 4.2; released ``InfoNce``).

    The batch is ``B/K`` groups of ``K = num_instances`` consecutive clips of one identity (the identity
    sampler's layout). Within a group the ``K * T`` L2-normalised frame features are compared; with
    ``s_ij = cos(f_i, f_j) / temperature``, frames ``i != j`` at the same position ``t`` are positives,
    frames at the other positions are the negatives ``N(i)``, and

        ``l_g = -mean over positive pairs (i, j) of group g of [s_ij - log(exp(s_ij) + sum_{n in N(i)} exp(s_in))]``

    and the loss is the *sum* of ``l_g`` over the groups: the released code divides the sum over all groups by
    the number of positive pairs of one group, so with 8 groups per batch the effective weight of a mean is 8x
    the nominal ``lambda2``. This is reproduced exactly.

    A clip of ``T = m * clip_len`` frames is first cut into ``m`` clips of ``clip_len`` frames, kept next to each
    other in the batch order (the released code does this for ``T = 8``), so a group of ``K`` consecutive entries
    then holds ``K / m`` clips of one identity.

    Args:
        frame_features: (B, T, C) projected per-frame features (``SINetOutput.frame_features``).
        num_instances: clips per identity group ``K`` (the sampler's ``num_instances``).
        temperature: softmax temperature (0.07).
        clip_len: frames per clip seen by the temporal modules (4).
    """
    b, t, c = frame_features.shape
    x = frame_features.float()
    if t > clip_len:
        if t % clip_len:
            raise ValueError(f'T={t} frames per clip is not a multiple of {clip_len}')
        x = x.reshape(b * (t // clip_len), clip_len, c)
        b, t = x.shape[0], clip_len
    k = num_instances
    if b % k:
        raise ValueError(f'batch of {b} clips is not made of groups of num_instances={k} clips')
    # (groups, K, T, C) -> (groups, T*K, C), frame index = position * K + instance
    x = F.normalize(x.reshape(b // k, k, t, c).transpose(1, 2).reshape(b // k, t * k, c), dim=-1)
    logits = x @ x.transpose(1, 2) / temperature
    pos_label = torch.arange(t, device=x.device).repeat_interleave(k)
    same_pos = pos_label[:, None].eq(pos_label[None, :])
    positive = same_pos & ~torch.eye(t * k, dtype=torch.bool, device=x.device)
    # s_ij - log(exp(s_ij) + sum_n exp(s_in)) = -softplus(logsumexp_n(s_in) - s_ij): the same value, without
    # overflow or cancellation (s_ij reaches 1 / 0.07 = 14.3)
    neg_lse = torch.logsumexp(logits.masked_fill(same_pos, float('-inf')), dim=-1, keepdim=True)
    log_prob = -F.softplus(neg_lse - logits)
    return -log_prob[positive.expand_as(log_prob)].sum() / positive.sum()


@dataclass
class LossParts:
    """The total loss and its (detached) parts."""

    loss: torch.Tensor
    ce: torch.Tensor
    triplet: torch.Tensor
    frame: torch.Tensor | None

    def as_tensors(self) -> dict[str, torch.Tensor]:
        out = {'loss': self.loss.detach(), 'ce': self.ce, 'triplet': self.triplet}
        if self.frame is not None:
            out['frame_infonce'] = self.frame
        return out

    def as_floats(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.as_tensors().items()}


class SINetCriterion(nn.Module):
    """``L = CE + triplet + frame_loss_weight * InfoNCE`` on a :class:`sinet_timm.SINetOutput` (paper Sec. 4.2).

    The frame term is used only when the model returns ``frame_features`` (SBNet, SINet) and the weight is > 0.
    """

    def __init__(
            self,
            num_instances: int = 4,
            margin: float = 0.3,
            frame_loss_weight: float = RELEASED_FRAME_LOSS_WEIGHT,
            temperature: float = 0.07,
            clip_len: int = 4,
    ):
        super().__init__()
        self.num_instances = num_instances
        self.margin = margin
        self.frame_loss_weight = frame_loss_weight
        self.temperature = temperature
        self.clip_len = clip_len

    def forward(self, output: SINetOutput, pids: torch.Tensor) -> LossParts:
        ce = F.cross_entropy(output.logits.float(), pids)
        tri = batch_hard_triplet_loss(output.embedding, pids, self.margin)
        loss = ce + tri
        frame = None
        if output.frame_features is not None and self.frame_loss_weight > 0:
            frame = frame_infonce_loss(output.frame_features, self.num_instances, self.temperature, self.clip_len)
            loss = loss + self.frame_loss_weight * frame
        return LossParts(loss, ce.detach(), tri.detach(), None if frame is None else frame.detach())
