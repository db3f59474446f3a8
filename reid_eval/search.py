"""Rank gallery tracklets for every query tracklet, from two feature files (the library behind ``sinet-search``).

Distances are cosine distances, ``1 - cos(q, g)`` (0 = same direction, 2 = opposite; the ranking equals the
evaluator's). ``--rerank`` applies k-reciprocal re-ranking (Zhong et al., CVPR 2017) with torchreid's
``re_ranking``; the reported distance is then the re-ranked one, beside the plain cosine distance.
"""
from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sinet_timm.paths import replace_file

from .datasets.spec import torchreid_module
from .errors import SearchError
from .featurefile import FeatureSet

__all__ = ['Match', 'QueryResult', 'cosine_distance_matrix', 'search', 'weights_warning', 'write_matches']


@dataclass
class Match:
    rank: int
    gallery: str
    gallery_index: int
    distance: float
    cosine_distance: float


@dataclass
class QueryResult:
    query: str
    query_index: int
    matches: list[Match]


def _re_ranking():
    """torchreid's k-reciprocal ``re_ranking`` (PyPI or upstream layout)."""
    return torchreid_module('torchreid.reid.utils.rerank', 'torchreid.utils.rerank').re_ranking


def cosine_distance_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` between every row of ``a`` and every row of ``b``: (Na, Nb), in [0, 2]."""
    return (1.0 - F.normalize(a.float(), dim=1) @ F.normalize(b.float(), dim=1).t()).clamp_min(0.0)


def weights_warning(query: FeatureSet, gallery: FeatureSet) -> str | None:
    """A warning when the two feature sets were made by different weights (sha256 in their metadata)."""
    qs, gs = query.weights_sha256, gallery.weights_sha256
    if qs and gs and qs != gs:
        return (f'query features were made by {query.model} (weights {qs[:12]}) but gallery features by '
                f'{gallery.model} (weights {gs[:12]}): embeddings of different weights are not comparable, so '
                'these distances are meaningless. Extract both with the same --model/--checkpoint.')
    if not qs or not gs:
        return 'a features file has no weights_sha256 metadata: cannot check that both come from the same weights'
    return None


def search(
        query: FeatureSet,
        gallery: FeatureSet,
        topk: int = 10,
        rerank: bool = False,
        k1: int = 20,
        k2: int = 6,
        lambda_value: float = 0.3,
        chunk: int = 1024,
) -> list[QueryResult]:
    """Top-``topk`` gallery matches of every query, closest first (ties keep gallery order).

    Re-ranking needs the full query+gallery distance matrices ((Nq+Ng)^2 floats, torchreid's ``re_ranking``).
    """
    qf, gf = query.features, gallery.features
    if qf.shape[1] != gf.shape[1]:
        raise SearchError(
            f'query embeddings are {qf.shape[1]}-d ({query.path or "query"}, {query.model}) but gallery embeddings '
            f'are {gf.shape[1]}-d ({gallery.path or "gallery"}, {gallery.model}): they were made by different '
            'models. Extract both with the same model.')
    if len(gallery.names) == 0 or len(query.names) == 0:
        raise SearchError('the query or gallery features file holds no tracklet')
    if topk < 1:
        raise SearchError(f'--topk must be >= 1, got {topk}')
    k = min(topk, gf.shape[0])
    out: list[QueryResult] = []
    if rerank:
        re_ranking = _re_ranking()
        cos = cosine_distance_matrix(qf, gf).numpy()
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            dist = np.asarray(re_ranking(cos, cosine_distance_matrix(qf, qf).numpy(),
                                         cosine_distance_matrix(gf, gf).numpy(), k1=k1, k2=k2,
                                         lambda_value=lambda_value), dtype=np.float32)
        chunks = [(0, cos, dist)]
    else:  # query chunks: memory stays at chunk x gallery floats
        chunks = []
        for s in range(0, qf.shape[0], chunk):
            cos = cosine_distance_matrix(qf[s:s + chunk], gf).numpy()
            chunks.append((s, cos, cos))
    for s, cos, dist in chunks:
        order = np.argsort(dist, axis=1, kind='stable')[:, :k]
        for i in range(dist.shape[0]):
            matches = [Match(r + 1, gallery.names[j], j, float(dist[i, j]), float(cos[i, j]))
                       for r, j in enumerate(order[i].tolist())]
            out.append(QueryResult(query.names[s + i], s + i, matches))
    return out


def write_matches(results: list[QueryResult], path: Path, info: dict[str, Any]) -> None:
    """Write the matches: .csv (one row per match) or .json (``info`` plus the matches per query)."""
    def write_csv(tmp: Path) -> None:
        with open(tmp, 'w', newline='') as fh:
            w = csv.writer(fh)
            w.writerow(['query', 'rank', 'gallery', 'distance', 'cosine_distance'])
            for r in results:
                for m in r.matches:
                    w.writerow([r.query, m.rank, m.gallery, f'{m.distance:.6f}', f'{m.cosine_distance:.6f}'])

    if path.suffix.lower() == '.csv':
        replace_file(path, write_csv)
        return
    doc = dict(info, results=[{'query': r.query, 'matches': [
        {'rank': m.rank, 'gallery': m.gallery, 'distance': m.distance, 'cosine_distance': m.cosine_distance}
        for m in r.matches]} for r in results])
    replace_file(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=2)))
