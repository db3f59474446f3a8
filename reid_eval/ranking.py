"""Cosine-distance ranking under the Market-1501 protocol of torchreid's ``evaluate_rank``, in query chunks.

The protocol (which video re-ID papers use): for each query, the gallery entries of the same identity seen by the
same camera are removed; CMC and AP are averaged over the queries that keep at least one true match. mINP (Ye et
al., TPAMI 2021, as fast-reid computes it) is averaged over the same queries: a query's INP is its number of true
matches divided by the rank, among the entries kept, of its hardest (last-ranked) true match. Computing
the distance matrix one chunk of queries at a time keeps memory at ``chunk x num_gallery`` floats, so a gallery
of 100k tracklets never needs a 100k x 100k matrix.

Two rankers give the same numbers (tested against each other):

* ``numpy`` (default): :func:`market1501_ranks`, torchreid's ``eval_market1501`` written with whole-array
  operations. It sorts with the same ``np.argsort`` call, so ties are broken identically; only the order of
  float64 additions in AP may differ (last-bit differences).
* ``torchreid``: torchreid's ``evaluate_rank`` itself. The PyPI package (0.2.5) ships no compiled ranker, and
  its Python fallback spends 95% of its time in a per-element Python loop over the gallery: about 20 s for
  MARS (1,980 x 11,310) on a 2-core VM, against under a second for ``numpy``. A deep-person-reid checkout
  whose Cython ranker is built runs that instead: same ranking, but it sums AP and CMC in float32, so its
  numbers differ from the others by float32 rounding (~1e-7 relative). :func:`ranker_description` says
  which one ran, and ``sinet-eval`` writes that into the protocol line. torchreid has no mINP: with this ranker
  mINP still comes from :func:`market1501_ranks` (the same ranking of the same distances).

:func:`rank_metrics` ranks features by cosine distance; :func:`rank_distances` ranks any precomputed distance
matrix (re-ranked distances, :mod:`reid_eval.postprocess`) under the same rules.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .datasets.spec import torchreid_module
from .errors import EvalError

RANKS = (1, 5, 10, 20)
RANKERS = ('numpy', 'torchreid')


def _torchreid_rank_module():
    """torchreid's ``metrics.rank`` module, from whichever torchreid is installed (PyPI or upstream layout)."""
    return torchreid_module('torchreid.reid.metrics.rank', 'torchreid.metrics.rank')


def _evaluate_rank():
    return _torchreid_rank_module().evaluate_rank


def torchreid_ranker_compiled() -> bool:
    """Whether torchreid's ``evaluate_rank`` runs its compiled Cython ranker (float32 sums) rather than the
    Python fallback (float64); never true for the PyPI package 0.2.5."""
    return bool(getattr(_torchreid_rank_module(), 'IS_CYTHON_AVAI', False))


def _check_ranker(ranker: str) -> None:
    if ranker not in RANKERS:
        raise EvalError(f'ranker must be one of {", ".join(RANKERS)}; got {ranker!r}')


def ranker_description(ranker: str) -> str:
    """The ranker as the protocol line names it, e.g. ``'numpy ranker'`` or ``'torchreid ranker (Python)'``."""
    _check_ranker(ranker)
    if ranker == 'numpy':
        return 'numpy ranker'
    return f'torchreid ranker ({"compiled Cython, float32 sums" if torchreid_ranker_compiled() else "Python"})'


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


_BLOCK = 1 << 22  # query x gallery entries that market1501_ranks handles at once (~150 MB of temporaries)


class Market1501Ranks(NamedTuple):
    """Per-query results of :func:`market1501_ranks`."""

    cmc: np.ndarray  # (Q, max_rank) bool: a true match among the first r+1 kept gallery entries
    ap: np.ndarray  # (Q,) float64 average precision
    valid: np.ndarray  # (Q,) bool: the query kept at least one true match (cmc, ap and inp of the others are 0)
    inp: np.ndarray  # (Q,) float64 inverse negative penalty: true matches / kept rank of the last true match


def market1501_ranks(
        dist: np.ndarray, q_pids, g_pids, q_camids, g_camids, max_rank: int,
) -> Market1501Ranks:
    """Per-query results of torchreid's ``eval_market1501``, with whole-array operations: ``(cmc, ap, valid, inp)``.

    ``cmc`` (Q, max_rank) bool: a true match among the first r+1 gallery entries kept for the query; ``ap`` (Q,)
    float64; ``valid`` (Q,) bool: the query kept at least one true match (cmc, ap and inp of the others are 0);
    ``inp`` (Q,) float64: the number of true matches over the 1-based rank, among the kept entries, of the last
    true match (fast-reid's INP, which torchreid lacks). Kept entries are those not of the query's identity *and*
    camera. A query that keeps fewer than ``max_rank`` entries has its cmc extended with its last value (torchreid
    raises on those).
    """
    dist = np.asarray(dist)
    q_pids, q_camids = np.asarray(q_pids), np.asarray(q_camids)
    g_pids, g_camids = np.asarray(g_pids), np.asarray(g_camids)
    nq, ng = dist.shape
    cmc = np.zeros((nq, max_rank), dtype=bool)
    ap = np.zeros(nq)
    inp = np.zeros(nq)
    valid = np.zeros(nq, dtype=bool)
    ranks = np.arange(max_rank)
    step = max(1, _BLOCK // max(ng, 1))
    for s in range(0, nq, step):
        sl = slice(s, min(s + step, nq))
        order = np.argsort(dist[sl], axis=1)  # torchreid's call: ties fall in the same order
        same_id = g_pids[order] == q_pids[sl, None]
        same_cam = g_camids[order] == q_camids[sl, None]
        hit = same_id & ~same_cam  # true matches; same_id & same_cam entries are removed
        pos = np.cumsum(~(same_id & same_cam), axis=1, dtype=np.int64)  # 1-based rank among kept entries
        hits_so_far = np.cumsum(hit, axis=1, dtype=np.int64)
        num_rel = hits_so_far[:, -1]
        ok = num_rel > 0
        # AP = mean over the true matches of the precision at their rank
        precision = np.divide(hits_so_far, pos, out=np.zeros(hit.shape), where=hit)
        ap[sl] = precision.sum(axis=1) / np.maximum(num_rel, 1)
        rows = np.arange(len(pos))
        first = pos[rows, hit.argmax(axis=1)] - 1  # 0-based kept rank of the first true match
        last = pos[rows, ng - 1 - hit[:, ::-1].argmax(axis=1)]  # 1-based kept rank of the last true match
        inp[sl] = np.divide(num_rel, last, out=np.zeros(len(last)), where=ok)
        cmc[sl] = ok[:, None] & (ranks[None, :] >= first[:, None])
        valid[sl] = ok
    return Market1501Ranks(cmc, ap, valid, inp)


def _torchreid_sums(evaluate_rank, dist: np.ndarray, q_pids, q_camids, g_pids, g_camids, valid: np.ndarray,
                    max_rank: int) -> tuple[np.ndarray, float]:
    """Sums of CMC curves and APs over the valid queries of one chunk, by torchreid's ``evaluate_rank``.

    torchreid needs every query to keep >= max_rank gallery entries after removing its same-camera matches;
    queries that keep fewer (tiny galleries) are ranked in groups of equal length and their CMC is extended with
    its final value (a valid query has found its match by its last kept entry)."""
    junk = np.array([np.count_nonzero((g_pids == p) & (g_camids == c)) for p, c in zip(q_pids, q_camids, strict=True)])
    depth = np.minimum(len(g_pids) - junk, max_rank)
    cmc_sum, ap_sum = np.zeros(max_rank), 0.0
    for d in np.unique(depth):
        rows = np.flatnonzero((depth == d) & valid)
        if len(rows) == 0:
            continue
        cmc, m_ap = evaluate_rank(dist[rows], q_pids[rows], g_pids, q_camids[rows], g_camids, max_rank=int(d),
                                  use_metric_cuhk03=False)
        cmc = np.asarray(cmc, dtype=np.float64)[: int(d)]
        cmc_sum += np.pad(cmc, (0, max_rank - len(cmc)), mode='edge') * len(rows)
        ap_sum += float(m_ap) * len(rows)
    return cmc_sum, ap_sum


def rank_metrics(
        qf: torch.Tensor, gf: torch.Tensor,
        q_pids, q_camids, g_pids, g_camids,
        chunk: int = 1024, max_rank: int = 50, device: torch.device | str = 'cpu', ranker: str = 'numpy',
) -> dict[str, Any]:
    """mAP, CMC rank-1/5/10/20 and mINP (in %) over the valid queries; also ``num_valid_queries`` and ``cmc``.

    ``ranker``: ``numpy`` (:func:`market1501_ranks`) or ``torchreid`` (its ``evaluate_rank``); same numbers, up to
    float32 rounding when torchreid's ranker is the compiled one (see the module docstring). mINP always comes
    from :func:`market1501_ranks`: torchreid computes none."""
    gf_dev = gf.to(device)

    def dist_of(rows: np.ndarray) -> np.ndarray:
        return cosine_distance(qf[rows].to(device), gf_dev).cpu().numpy()

    return _rank(dist_of, q_pids, q_camids, g_pids, g_camids, chunk, max_rank, ranker)


def rank_distances(
        dist: np.ndarray,
        q_pids, q_camids, g_pids, g_camids,
        chunk: int = 1024, max_rank: int = 50, ranker: str = 'numpy',
) -> dict[str, Any]:
    """:func:`rank_metrics` of a precomputed (num_query, num_gallery) distance matrix (smaller is closer), e.g.
    re-ranked distances: the same protocol, metrics and rankers."""
    dist = np.asarray(dist)
    if dist.shape != (len(q_pids), len(g_pids)):
        raise EvalError(f'the distance matrix is {dist.shape}, but there are {len(q_pids)} queries and '
                        f'{len(g_pids)} gallery entries')
    return _rank(lambda rows: dist[rows], q_pids, q_camids, g_pids, g_camids, chunk, max_rank, ranker)


def _rank(dist_of: Callable[[np.ndarray], np.ndarray], q_pids, q_camids, g_pids, g_camids, chunk: int,
          max_rank: int, ranker: str) -> dict[str, Any]:
    """Rank the queries in chunks (``dist_of(rows)``: their distances to the gallery) and average the metrics."""
    _check_ranker(ranker)
    evaluate_rank = _evaluate_rank() if ranker == 'torchreid' else None
    q_pids, q_camids = np.asarray(q_pids), np.asarray(q_camids)
    g_pids, g_camids = np.asarray(g_pids), np.asarray(g_camids)
    valid = valid_queries(q_pids, q_camids, g_pids, g_camids)
    if not valid.any():
        raise EvalError('no query identity appears in the gallery under another camera: nothing to evaluate')
    max_rank = min(max_rank, len(g_pids))
    cmc_sum = np.zeros(max_rank)
    ap_sum = inp_sum = 0.0
    for s in range(0, len(q_pids), chunk):
        sl = np.arange(s, min(s + chunk, len(q_pids)))
        if not valid[sl].any():
            continue  # torchreid refuses a chunk without any valid query
        dist = dist_of(sl)
        if not np.isfinite(dist).all():  # NaN sorts anywhere: the metrics would be wrong, not missing
            raise EvalError(f'the distances of queries {sl[0]}..{sl[-1]} hold non-finite values (NaN or inf), so no '
                            'metrics are computed; the embeddings or the re-ranking / query-expansion parameters '
                            'that produced them are to blame')
        ours = market1501_ranks(dist, q_pids[sl], g_pids, q_camids[sl], g_camids, max_rank)
        inp_sum += float(ours.inp.sum())
        if evaluate_rank is None:
            cmc_sum += ours.cmc.sum(axis=0)
            ap_sum += float(ours.ap.sum())
        else:
            c, a = _torchreid_sums(evaluate_rank, dist, q_pids[sl], q_camids[sl], g_pids, g_camids, valid[sl],
                                   max_rank)
            cmc_sum += c
            ap_sum += a
    n = int(valid.sum())
    cmc = cmc_sum / n
    out: dict[str, Any] = {'mAP': 100.0 * ap_sum / n}
    for r in RANKS:
        out[f'rank{r}'] = 100.0 * float(cmc[min(r, max_rank) - 1])
    out['mINP'] = 100.0 * inp_sum / n
    out['num_valid_queries'] = n
    out['cmc'] = [100.0 * float(v) for v in cmc]
    return out
