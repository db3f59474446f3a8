"""``sinet-search``: rank gallery tracklets for every query tracklet, from two ``sinet-extract`` files.

    sinet-search --query q.safetensors --gallery g.safetensors --topk 10 [--rerank] [--output matches.csv]

Distances are cosine distances, ``1 - cos(q, g)`` (0 = same direction, 2 = opposite; the ranking equals the
evaluator's). ``--rerank`` applies k-reciprocal re-ranking (Zhong et al., CVPR 2017) with torchreid's
``re_ranking``; the reported distance is then the re-ranked one, beside the plain cosine distance.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .engine import output_taken
from .extract import FeatureFileError, FeatureSet, load_features

__all__ = ['Match', 'QueryResult', 'SearchError', 'cosine_distance_matrix', 'weights_warning', 'search', 'main']


class SearchError(ValueError):
    """The query and gallery features cannot be compared (or the search arguments are invalid)."""


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
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # torchreid's "Cython evaluation unavailable" notice at import
        try:
            from torchreid.reid.utils.rerank import re_ranking  # torchreid 0.2.5 (pip) layout
        except ImportError:
            try:
                from torchreid.utils.rerank import re_ranking  # upstream deep-person-reid layout
            except ImportError as e:
                raise SearchError('--rerank needs torchreid (pip install torchreid); it provides re_ranking') from e
    return re_ranking


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


def _write(results: list[QueryResult], path: Path, info: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == '.csv':
        with open(path, 'w', newline='') as fh:
            w = csv.writer(fh)
            w.writerow(['query', 'rank', 'gallery', 'distance', 'cosine_distance'])
            for r in results:
                for m in r.matches:
                    w.writerow([r.query, m.rank, m.gallery, f'{m.distance:.6f}', f'{m.cosine_distance:.6f}'])
        return
    doc = dict(info, results=[{'query': r.query, 'matches': [
        {'rank': m.rank, 'gallery': m.gallery, 'distance': m.distance, 'cosine_distance': m.cosine_distance}
        for m in r.matches]} for r in results])
    path.write_text(json.dumps(doc, indent=2))


def _print(results: list[QueryResult], rerank: bool, file=None) -> None:
    file = file or sys.stdout
    col = 're-ranked' if rerank else 'cos dist'
    for r in results:
        print(f'query {r.query}', file=file)
        width = max(len(m.gallery) for m in r.matches)
        for m in r.matches:
            extra = f'  (cos dist {m.cosine_distance:.4f})' if rerank else ''
            print(f'  {m.rank:3d}. {m.gallery:<{width}}  {col} {m.distance:.4f}{extra}', file=file)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='sinet-search', description=__doc__.split('\n\n')[0].replace('``', ''))
    p.add_argument('--query', '-q', type=Path, required=True, help='query features (sinet-extract output)')
    p.add_argument('--gallery', '-g', type=Path, required=True, help='gallery features (sinet-extract output)')
    p.add_argument('--topk', '-k', type=int, default=10, help='matches per query (default 10)')
    p.add_argument('--rerank', action='store_true', help="k-reciprocal re-ranking (torchreid's re_ranking)")
    p.add_argument('--k1', type=int, default=20, help='re-ranking k1 (default 20)')
    p.add_argument('--k2', type=int, default=6, help='re-ranking k2 (default 6)')
    p.add_argument('--lambda-value', type=float, default=0.3, help='re-ranking weight of the original distance')
    p.add_argument('--output', '-o', type=Path, help='write the matches: .csv (one row per match) or .json')
    p.add_argument('--overwrite', action='store_true', help='replace an existing --output file')
    p.add_argument('--quiet', action='store_true', help='do not print the matches')
    return p


def main(argv: list[str] | None = None) -> int:
    """``sinet-search``: returns 0 on success, 2 on a user error (printed as one ``error:`` message)."""
    args = build_parser().parse_args(argv)
    if taken := output_taken(args.output, args.overwrite):
        print(f'error: {taken}', file=sys.stderr)
        return 2
    if args.output and args.output.suffix.lower() not in ('.csv', '.json'):
        print(f'error: --output {args.output}: use a .csv or .json file name', file=sys.stderr)
        return 2
    try:
        query, gallery = load_features(args.query), load_features(args.gallery)
        warning = weights_warning(query, gallery)
        if warning:
            print(f'warning: {warning}', file=sys.stderr)
        results = search(query, gallery, args.topk, args.rerank, args.k1, args.k2, args.lambda_value)
    except (FeatureFileError, SearchError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    if not args.quiet:
        _print(results, args.rerank)
    if args.output:
        info = {'query_file': str(args.query), 'gallery_file': str(args.gallery), 'model': query.model,
                'weights_sha256': query.weights_sha256, 'gallery_weights_sha256': gallery.weights_sha256,
                'distance': 'cosine distance 1 - cos' + (' after k-reciprocal re-ranking' if args.rerank else ''),
                'rerank': {'k1': args.k1, 'k2': args.k2, 'lambda_value': args.lambda_value} if args.rerank else None,
                'topk': args.topk, 'warning': warning}
        _write(results, args.output, info)
        print(f'wrote {sum(len(r.matches) for r in results)} matches to {args.output}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
