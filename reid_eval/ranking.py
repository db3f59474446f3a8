"""Cosine-distance ranking with torchreid's ``evaluate_rank``, in query chunks.

torchreid's evaluation (Market-1501 style, which video re-ID papers use) removes, for each query, the gallery
entries of the same identity seen by the same camera, and averages CMC and AP over queries that keep at least one
true match. Computing the distance matrix one chunk of queries at a time keeps memory at
``chunk x num_gallery`` floats, so a gallery of 100k tracklets never needs a 100k x 100k matrix.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

RANKS = (1, 5, 10, 20)


def _evaluate_rank():
    try:
        from torchreid.reid.metrics import evaluate_rank
    except ImportError:  # upstream deep-person-reid layout
        from torchreid.metrics import evaluate_rank
    return evaluate_rank


def cosine_distance(qf: torch.Tensor, gf: torch.Tensor) -> torch.Tensor:
    """Negative cosine similarity, as the released evaluation ranks (smaller is closer)."""
    return -(F.normalize(qf.float(), dim=1) @ F.normalize(gf.float(), dim=1).t())


def valid_queries(q_pids, q_camids, g_pids, g_camids) -> np.ndarray:
    """Queries with at least one gallery match of the same identity from another camera."""
    q_pids, q_camids = np.asarray(q_pids), np.asarray(q_camids)
    g_pids, g_camids = np.asarray(g_pids), np.asarray(g_camids)
    out = np.zeros(len(q_pids), dtype=bool)
    by_pid: dict[int, set[int]] = {}
    for p, c in zip(g_pids.tolist(), g_camids.tolist(), strict=True):
        by_pid.setdefault(p, set()).add(c)
    for i, (p, c) in enumerate(zip(q_pids.tolist(), q_camids.tolist(), strict=True)):
        cams = by_pid.get(p, set())
        out[i] = bool(cams - {c})
    return out


def rank_metrics(
        qf: torch.Tensor, gf: torch.Tensor,
        q_pids, q_camids, g_pids, g_camids,
        chunk: int = 1024, max_rank: int = 50, device: torch.device | str = 'cpu',
) -> dict[str, float]:
    """mAP and CMC rank-1/5/10/20 (in %) over the valid queries; also ``num_valid_queries``."""
    evaluate_rank = _evaluate_rank()
    q_pids, q_camids = np.asarray(q_pids), np.asarray(q_camids)
    g_pids, g_camids = np.asarray(g_pids), np.asarray(g_camids)
    valid = valid_queries(q_pids, q_camids, g_pids, g_camids)
    if not valid.any():
        raise ValueError('no query identity appears in the gallery under another camera: nothing to evaluate')
    gf_dev = gf.to(device)
    max_rank = min(max_rank, len(g_pids))
    # torchreid needs every query to keep >= max_rank gallery entries after removing its same-camera matches;
    # queries that keep fewer (tiny galleries) are ranked in groups of equal length and their CMC is extended
    # with its final value (a valid query has found its match by its last kept entry)
    junk = np.zeros(len(q_pids), dtype=np.int64)
    for i, (p, c) in enumerate(zip(q_pids.tolist(), q_camids.tolist(), strict=True)):
        junk[i] = int(np.count_nonzero((g_pids == p) & (g_camids == c)))
    depth = np.minimum(len(g_pids) - junk, max_rank)
    cmc_sum = np.zeros(max_rank)
    ap_sum = 0.0
    for s in range(0, len(q_pids), chunk):
        sl = np.arange(s, min(s + chunk, len(q_pids)))
        if not valid[sl].any():
            continue  # torchreid refuses a chunk without any valid query
        dist = cosine_distance(qf[sl].to(device), gf_dev).cpu().numpy()
        for d in np.unique(depth[sl]):
            rows = np.flatnonzero((depth[sl] == d) & valid[sl])
            if len(rows) == 0:
                continue
            q = sl[rows]
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')  # the "Cython evaluation unavailable" notice
                cmc, m_ap = evaluate_rank(dist[rows], q_pids[q], g_pids, q_camids[q], g_camids, max_rank=int(d),
                                          use_metric_cuhk03=False)
            cmc = np.asarray(cmc, dtype=np.float64)[: int(d)]
            cmc_sum += np.pad(cmc, (0, max_rank - len(cmc)), mode='edge') * len(rows)
            ap_sum += float(m_ap) * len(rows)
    n = int(valid.sum())
    cmc = cmc_sum / n
    out = {'mAP': 100.0 * ap_sum / n}
    for r in RANKS:
        out[f'rank{r}'] = 100.0 * float(cmc[min(r, max_rank) - 1])
    out['num_valid_queries'] = n
    out['cmc'] = [100.0 * float(v) for v in cmc]
    return out
