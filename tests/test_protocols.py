"""Protocols beyond the released one (issue 19): mINP, each against an independent plain computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import reid_eval
from reid_eval.ranking import RANKERS, market1501_ranks, rank_distances, rank_metrics

# ---------------------------------------------------------------------------------------------------------
# mINP


def _plain_minp(dist: np.ndarray, q_pids, q_cams, g_pids, g_cams) -> tuple[float, list[float]]:
    """mINP by hand: per query, drop the gallery entries of its identity and camera, rank the rest (ties in the
    protocol's order: torchreid's np.argsort), INP = true matches / 1-based rank of the last one; mean in %."""
    inps = []
    for i in range(len(q_pids)):
        order = np.argsort(dist[i])
        kept = [j for j in order if not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])]
        hits = [g_pids[j] == q_pids[i] for j in kept]
        if not any(hits):
            inps.append(None)
            continue
        last = max(r for r, h in enumerate(hits) if h) + 1
        inps.append(sum(hits) / last)
    valid = [v for v in inps if v is not None]
    return 100 * float(np.mean(valid)), inps


def _random_ids(rng, nq: int, ng: int):
    g_pids = np.concatenate([rng.integers(0, 12, ng - 5), np.full(5, -1)])  # with distractors
    q_pids = rng.integers(0, 14, nq)  # some identities absent from the gallery: not counted
    return q_pids, rng.integers(0, 3, nq), g_pids, rng.integers(0, 3, ng)  # many same-camera (junk) matches


@pytest.mark.parametrize('levels', [None, 4])  # continuous distances, and only 4 distinct values (many ties)
@pytest.mark.parametrize('chunk', [1, 7, 10_000])
def test_minp_matches_a_plain_per_query_computation(levels, chunk):
    rng = np.random.default_rng(0)
    nq, ng = 40, 90
    q_pids, q_cams, g_pids, g_cams = _random_ids(rng, nq, ng)
    dist = rng.random((nq, ng)).astype(np.float32)
    if levels:
        dist = np.floor(dist * levels).astype(np.float32)
    ref, per_query = _plain_minp(dist, q_pids, q_cams, g_pids, g_cams)
    ranks = market1501_ranks(dist, q_pids, g_pids, q_cams, g_cams, max_rank=20)
    for i, v in enumerate(per_query):
        assert ranks.valid[i] == (v is not None)
        assert ranks.inp[i] == pytest.approx(v or 0.0, rel=1e-12, abs=0), i
    assert 0 < ranks.valid.sum() < nq
    for ranker in RANKERS:  # torchreid has no mINP: its ranker reports ours, of the same distances
        m = rank_distances(dist, q_pids, q_cams, g_pids, g_cams, chunk=chunk, ranker=ranker)
        assert m['mINP'] == pytest.approx(ref, rel=1e-12)
        assert list(m)[:6] == ['mAP', 'rank1', 'rank5', 'rank10', 'rank20', 'mINP']


def test_minp_of_features_and_its_bounds():
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(1)
    q_pids, q_cams, g_pids, g_cams = _random_ids(rng, 30, 80)
    qf, gf = torch.randn(30, 16, generator=g), torch.randn(80, 16, generator=g)
    m = rank_metrics(qf, gf, q_pids, q_cams, g_pids, g_cams, chunk=8)
    dist = -(F.normalize(qf, dim=1) @ F.normalize(gf, dim=1).t()).numpy()
    assert m == rank_distances(dist, q_pids, q_cams, g_pids, g_cams, chunk=8)  # the same ranking, exactly
    assert m['mINP'] == pytest.approx(_plain_minp(dist, q_pids, q_cams, g_pids, g_cams)[0], rel=1e-12)
    assert 0 < m['mINP'] <= m['mAP']  # INP <= AP for every query
    # a perfect ranking: INP 1 for every query
    feats = torch.eye(4)
    perfect = rank_metrics(feats, feats, [0, 1, 2, 3], [0, 0, 0, 0], [0, 1, 2, 3], [1, 1, 1, 1])
    assert perfect['mINP'] == perfect['mAP'] == 100.0
    with pytest.raises(reid_eval.EvalError, match=r'distance matrix is \(2, 3\)'):
        rank_distances(np.zeros((2, 3)), [0, 1], [0, 0], [0, 1], [1, 1])
