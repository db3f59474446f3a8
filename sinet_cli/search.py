"""``sinet-search``: rank gallery tracklets for every query tracklet, from two ``sinet-extract`` files.

    sinet-search --query q.safetensors --gallery g.safetensors --topk 10 [--rerank] [--output matches.csv]

Distances are cosine distances, ``1 - cos(q, g)`` (0 = same direction, 2 = opposite; the ranking equals the
evaluator's). ``--rerank`` applies k-reciprocal re-ranking (Zhong et al., CVPR 2017) with torchreid's
``re_ranking``; the reported distance is then the re-ranked one, beside the plain cosine distance.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import RERANK_DEFAULTS, fail, output_taken, run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='sinet-search', description=__doc__.split('\n\n')[0].replace('``', ''))
    p.add_argument('--query', '-q', type=Path, required=True, help='query features (sinet-extract output)')
    p.add_argument('--gallery', '-g', type=Path, required=True, help='gallery features (sinet-extract output)')
    p.add_argument('--topk', '-k', type=int, default=10, help='matches per query (default 10)')
    p.add_argument('--rerank', action='store_true', help="k-reciprocal re-ranking (torchreid's re_ranking)")
    p.add_argument('--k1', type=int, default=RERANK_DEFAULTS['k1'],
                   help=f"re-ranking k1 (default {RERANK_DEFAULTS['k1']})")
    p.add_argument('--k2', type=int, default=RERANK_DEFAULTS['k2'],
                   help=f"re-ranking k2 (default {RERANK_DEFAULTS['k2']})")
    p.add_argument('--lambda-value', type=float, default=RERANK_DEFAULTS['lambda_value'],
                   help=f"re-ranking weight of the original distance (default {RERANK_DEFAULTS['lambda_value']})")
    p.add_argument('--output', '-o', type=Path, help='write the matches: .csv (one row per match) or .json')
    p.add_argument('--overwrite', action='store_true', help='replace an existing --output file')
    p.add_argument('--quiet', action='store_true', help='do not print the matches')
    return p


def _print(results, rerank: bool, file=None) -> None:
    file = file or sys.stdout
    col = 're-ranked' if rerank else 'cos dist'
    for r in results:
        print(f'query {r.query}', file=file)
        width = max(len(m.gallery) for m in r.matches)
        for m in r.matches:
            extra = f'  (cos dist {m.cosine_distance:.4f})' if rerank else ''
            print(f'  {m.rank:3d}. {m.gallery:<{width}}  {col} {m.distance:.4f}{extra}', file=file)


def _search(args: argparse.Namespace) -> int:
    from reid_eval.featurefile import load_features
    from reid_eval.search import search, weights_warning, write_matches

    query, gallery = load_features(args.query), load_features(args.gallery)
    warning = weights_warning(query, gallery)
    if warning:
        print(f'warning: {warning}', file=sys.stderr)
    results = search(query, gallery, args.topk, args.rerank, args.k1, args.k2, args.lambda_value)
    if not args.quiet:
        _print(results, args.rerank)
    if args.output:
        info = {'query_file': str(args.query), 'gallery_file': str(args.gallery), 'model': query.model,
                'weights_sha256': query.weights_sha256, 'gallery_weights_sha256': gallery.weights_sha256,
                'distance': 'cosine distance 1 - cos' + (' after k-reciprocal re-ranking' if args.rerank else ''),
                'rerank': {'k1': args.k1, 'k2': args.k2, 'lambda_value': args.lambda_value} if args.rerank else None,
                'topk': args.topk, 'warning': warning}
        write_matches(results, args.output, info)
        print(f'wrote {sum(len(r.matches) for r in results)} matches to {args.output}', file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``sinet-search``: returns 0 on success, 2 on a user error (printed as one ``error:`` message)."""
    args = build_parser().parse_args(argv)
    if taken := output_taken(args.output, args.overwrite):
        return fail(taken)
    if args.output and args.output.suffix.lower() not in ('.csv', '.json'):
        return fail(f'--output {args.output}: use a .csv or .json file name')
    return run(lambda: _search(args), interrupted='nothing was written; rerun the command')


if __name__ == '__main__':
    sys.exit(main())
