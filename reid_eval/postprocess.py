"""Post-processing of the ranking that torchreid and fast-reid offer: k-reciprocal re-ranking and average query
expansion (AQE). ``sinet-eval`` reports each as its own labelled result beside the plain protocol, never in its
place.

* :func:`k_reciprocal_distances`: k-reciprocal re-ranking (Zhong et al., CVPR 2017) as torchreid's
  ``re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3)`` computes it, number for number, but
  in blocks of rows. torchreid builds the whole (Nq+Ng)^2 distance matrix, its argsort and the (Nq+Ng)^2 matrices
  V and V_qe: for MARS (1,980 queries, 11,310 gallery tracklets, or 13,290 with the queries added as released)
  that is several GB (``benchmarks/bench_rerank.py`` measures it). Here only what the algorithm reads is kept:
  the first ``max(k1+1, k2)`` columns of each row's argsort, and V and V_qe as sparse (CSR) matrices (a row has
  a few hundred non-zeros at most); distance rows are computed three times (twice for every entry, once more for
  the queries), one block at a time. Memory is ``block x (Nq+Ng)`` floats plus the sparse V (tens of MB at MARS
  scale) plus the (Nq, Ng) result. :func:`re_ranking_blocks` is the
  algorithm on any distance matrix given block by block; it equals torchreid's ``re_ranking`` to the last bit
  (same float32 operations in the same order, same argsort; tested).
* :func:`average_query_expansion`: fast-reid's ``aqe`` (alpha query expansion, Radenovic et al.): every query and
  gallery embedding is replaced by the mean of its ``k`` nearest embeddings among query + gallery (itself
  included), each weighted by its cosine similarity to the power ``alpha``; ranking then uses the expanded
  embeddings. fast-reid's defaults: ``k=5``, ``alpha=3.0``, one round.

Distance: the evaluation ranks by cosine distance, and re-ranking is given ``1 - cos`` (clamped at 0), as
torchreid's engine passes it with ``dist_metric='cosine'`` (and ``sinet-search --rerank``). torchreid squares the
distances and divides each row by its maximum, so this equals its default squared-euclidean metric on
L2-normalised features, ``2 - 2 cos``, up to that scale. With both, AQE comes first and re-ranking ranks the
expanded embeddings (fast-reid's order).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ._checks import is_int as _is_int
from ._checks import is_number as _is_number
from .errors import EvalError

__all__ = ['AQEOptions', 'RerankOptions', 'average_query_expansion', 'k_reciprocal_distances', 're_ranking_blocks']

RERANK_DISTANCE = '1 - cos'


@dataclass(frozen=True)
class RerankOptions:
    """k-reciprocal re-ranking parameters (torchreid's and fast-reid's defaults)."""

    k1: int = 20  # size of the k-reciprocal neighbourhoods
    k2: int = 6  # local query expansion over this many nearest neighbours (1: none)
    lambda_value: float = 0.3  # weight of the original distance in the final one (the Jaccard distance: 1 - it)

    def validate(self) -> None:
        if not (_is_int(self.k1) and self.k1 >= 1):
            raise EvalError(f'--rerank-k1 must be a positive integer, got {self.k1!r}')
        if not (_is_int(self.k2) and self.k2 >= 1):
            raise EvalError(f'--rerank-k2 must be a positive integer, got {self.k2!r}')
        if not (_is_number(self.lambda_value) and 0.0 <= self.lambda_value <= 1.0):
            raise EvalError(f'--rerank-lambda must be in [0, 1], got {self.lambda_value!r}')

    def describe(self) -> str:
        return (f'k-reciprocal re-ranking (k1 {self.k1}, k2 {self.k2}, lambda {self.lambda_value:g}) of '
                f'{RERANK_DISTANCE}')

    def to_json(self) -> dict[str, Any]:
        return {'k1': self.k1, 'k2': self.k2, 'lambda_value': self.lambda_value, 'distance': RERANK_DISTANCE,
                'implementation': "torchreid's re_ranking, computed in row blocks (reid_eval.postprocess)"}


@dataclass(frozen=True)
class AQEOptions:
    """Average (alpha) query expansion parameters (fast-reid's defaults)."""

    k: int = 5  # neighbours averaged, the embedding itself included
    alpha: float = 3.0  # weight of a neighbour: its cosine similarity to this power

    def validate(self) -> None:
        if not (_is_int(self.k) and self.k >= 1):
            raise EvalError(f'--aqe-k must be a positive integer, got {self.k!r}')
        if not (_is_number(self.alpha) and np.isfinite(self.alpha)):
            raise EvalError(f'--aqe-alpha must be a finite number, got {self.alpha!r}')

    def describe(self) -> str:
        return f'average query expansion (k {self.k}, alpha {self.alpha:g})'

    def to_json(self) -> dict[str, Any]:
        return {'k': self.k, 'alpha': self.alpha, 'times': 1,
                'implementation': "fast-reid's aqe, in row blocks (reid_eval.postprocess)"}


def average_query_expansion(
        qf: torch.Tensor, gf: torch.Tensor, k: int = 5, alpha: float = 3.0, chunk: int = 1024,
        device: torch.device | str = 'cpu',
) -> tuple[torch.Tensor, torch.Tensor]:
    """fast-reid's ``aqe`` (one round): each of the query and gallery embeddings becomes the mean of its ``k``
    nearest neighbours among query + gallery (by cosine similarity, itself included), neighbour ``j`` weighted by
    ``cos^alpha``; the raw (not normalised) embeddings are averaged, as fast-reid does. Computed ``chunk`` rows at a
    time (memory ``chunk x (Nq+Ng)``). Returns the expanded (query, gallery) embeddings, float32 on the CPU."""
    feats = torch.cat([qf, gf]).float().to(device)
    normed = F.normalize(feats, dim=1)
    k = min(k, feats.shape[0])
    out = torch.empty_like(feats)
    for s in range(0, feats.shape[0], chunk):
        sims = normed[s:s + chunk] @ normed.t()
        top, idx = sims.topk(k, dim=1)
        weights = top.pow(alpha)
        out[s:s + chunk] = (feats[idx] * weights[..., None]).mean(dim=1)
    if not torch.isfinite(out).all():
        raise EvalError(f'average query expansion with alpha {alpha:g} gave non-finite embeddings: a neighbour with '
                        'negative cosine similarity raised to a non-integer power is NaN; use an integer --aqe-alpha '
                        '(3 by default)' if not float(alpha).is_integer() else
                        'average query expansion gave non-finite embeddings: the input embeddings are not finite')
    out = out.cpu()
    return out[:qf.shape[0]], out[qf.shape[0]:]


def _cosine_rows(feats: torch.Tensor, device: torch.device | str) -> Callable[[int, int], np.ndarray]:
    normed = F.normalize(feats.float(), dim=1).to(device)

    def rows(lo: int, hi: int) -> np.ndarray:
        return (1.0 - normed[lo:hi] @ normed.t()).clamp_min_(0.0).cpu().numpy()

    return rows


def k_reciprocal_distances(
        qf: torch.Tensor, gf: torch.Tensor, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
        chunk: int = 256, device: torch.device | str = 'cpu',
) -> np.ndarray:
    """The (Nq, Ng) k-reciprocal re-ranked distances of query and gallery embeddings: torchreid's ``re_ranking``
    of the ``1 - cos`` distances, in blocks of ``chunk`` rows (see the module docstring)."""
    rows = _cosine_rows(torch.cat([qf, gf]), device)  # holds only the normalised copy
    return re_ranking_blocks(rows, qf.shape[0], qf.shape[0] + gf.shape[0], k1=k1, k2=k2, lambda_value=lambda_value,
                             chunk=chunk)


def _row_blocks(n: int, chunk: int):
    for lo in range(0, n, chunk):
        yield lo, min(lo + chunk, n)


def _normalised(rows: Callable[[int, int], np.ndarray], lo: int, hi: int) -> np.ndarray:
    """Rows ``lo:hi`` of torchreid's ``original_dist`` after its normalisation: squared, float32, each row divided by
    its maximum (torchreid divides the columns of the untransposed matrix, then transposes)."""
    d = np.power(rows(lo, hi), 2).astype(np.float32)
    return 1. * d / np.max(d, axis=1, keepdims=True)


def _reciprocal(top: np.ndarray) -> list[np.ndarray]:
    """Per row i, the entries j of ``top[i]`` (in that order) whose own row ``top[j]`` holds i."""
    n = top.shape[0]
    out = []
    for lo, hi in _row_blocks(n, 4096):
        back = top[top[lo:hi]]  # (rows, w, w): the neighbours' neighbours
        mask = (back == np.arange(lo, hi)[:, None, None]).any(axis=2)
        out.extend(top[i][mask[i - lo]] for i in range(lo, hi))
    return out


def re_ranking_blocks(
        rows: Callable[[int, int], np.ndarray], num_query: int, num_all: int,
        k1: int = 20, k2: int = 6, lambda_value: float = 0.3, chunk: int = 256,
) -> np.ndarray:
    """torchreid's ``re_ranking``, reading the distance matrix a block of rows at a time.

    ``rows(lo, hi)`` gives rows ``lo:hi`` of the (num_all, num_all) distance matrix over query + gallery (queries
    first) *as torchreid reads it*: the transpose of its ``[[q_q, q_g], [q_g.T, g_g]]`` (the same matrix for
    symmetric distances). Returns the (num_query, num_all - num_query) re-ranked query-gallery distances, equal to
    ``re_ranking(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value)`` to the last bit.
    """
    n = num_all
    if num_query < 1 or n - num_query < 1:
        raise EvalError('re-ranking needs at least one query and one gallery entry')
    width = min(max(k1 + 1, k2), n)  # the argsort columns the algorithm reads
    half = int(np.around(k1 / 2.)) + 1
    # pass 1: the first columns of each row's argsort (torchreid's initial_rank; the same np.argsort call)
    top = np.empty((n, width), dtype=np.int32)
    for lo, hi in _row_blocks(n, chunk):
        top[lo:hi] = np.argsort(_normalised(rows, lo, hi))[:, :width]
    recip = _reciprocal(top[:, :k1 + 1])
    half_sets = [set(r.tolist()) for r in _reciprocal(top[:, :half])]
    # pass 2: V, one sparse row per entry: Gaussian weights over the expanded k-reciprocal neighbourhood. Kept as
    # one CSR matrix, concatenated block by block (millions of small arrays living on between the distance blocks
    # would fragment the heap: +360 MB of resident memory at 7,000 entries)
    indptr = np.zeros(n + 1, dtype=np.int64)
    idx_parts, val_parts = [], []
    for lo, hi in _row_blocks(n, chunk):
        dist = _normalised(rows, lo, hi)
        block_idx, block_val = [], []
        for i in range(lo, hi):
            r = recip[i]
            r_set = set(r.tolist())
            expansion = [r]
            for c in r.tolist():
                cand = half_sets[c]
                if len(cand & r_set) > 2. / 3 * len(cand):
                    expansion.append(np.fromiter(cand, dtype=np.int32, count=len(cand)))
            idx = np.unique(np.concatenate(expansion))
            weight = np.exp(-dist[i - lo, idx])
            block_idx.append(idx)
            block_val.append(1. * weight / np.sum(weight))
            indptr[i + 1] = len(idx)
        idx_parts.append(np.concatenate(block_idx))
        val_parts.append(np.concatenate(block_val))
        del dist, block_idx, block_val
    np.cumsum(indptr, out=indptr)
    v_idx, v_val = np.concatenate(idx_parts), np.concatenate(val_parts)
    del idx_parts, val_parts
    if k2 != 1:  # local query expansion: the mean of the V rows of the k2 nearest entries (float32, in order)
        qe_ptr = np.zeros(n + 1, dtype=np.int64)
        qe_idx, qe_val = [], []
        for i in range(n):
            nbrs = top[i, :k2]
            cols = np.concatenate([v_idx[indptr[j]:indptr[j + 1]] for j in nbrs])
            vals = np.concatenate([v_val[indptr[j]:indptr[j + 1]] for j in nbrs])
            idx, inverse = np.unique(cols, return_inverse=True)
            acc = np.zeros(len(idx), dtype=np.float32)
            np.add.at(acc, inverse, vals)
            np.true_divide(acc, np.intp(len(nbrs)), out=acc, casting='unsafe')  # np.mean's division
            qe_idx.append(idx)
            qe_val.append(acc)
            qe_ptr[i + 1] = len(idx)
        np.cumsum(qe_ptr, out=qe_ptr)
        indptr, v_idx, v_val = qe_ptr, np.concatenate(qe_idx), np.concatenate(qe_val)
        del qe_idx, qe_val
    del top, recip, half_sets
    # the columns of V (torchreid's invIndex): CSC, rows in increasing order within a column
    all_rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    order = np.argsort(v_idx, kind='stable')
    col_rows, col_vals = all_rows[order], v_val[order]
    col_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(v_idx, minlength=n), out=col_ptr[1:])
    del all_rows, order
    # pass 3 (query rows): Jaccard distance from the shared V mass, then the weighted sum with the original
    out = np.empty((num_query, n - num_query), dtype=np.float32)
    for lo, hi in _row_blocks(num_query, chunk):
        dist = _normalised(rows, lo, hi)
        for i in range(lo, hi):
            cols = v_idx[indptr[i]:indptr[i + 1]].astype(np.int64)  # increasing, as torchreid visits them
            vals = v_val[indptr[i]:indptr[i + 1]]
            starts, counts = col_ptr[cols], col_ptr[cols + 1] - col_ptr[cols]
            at = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
            temp_min = np.zeros(n, dtype=np.float32)
            np.add.at(temp_min, col_rows[at], np.minimum(np.repeat(vals, counts), col_vals[at]))
            jaccard = 1 - temp_min / (2. - temp_min)
            out[i] = (jaccard * (1 - lambda_value) + dist[i - lo] * lambda_value)[num_query:]
    return out
