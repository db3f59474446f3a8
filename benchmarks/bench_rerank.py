"""Peak memory and time of k-reciprocal re-ranking and AQE at MARS scale: torchreid's ``re_ranking`` (whole
(Nq+Ng)^2 matrices) against ``reid_eval.postprocess`` (row blocks), side by side in one run.

    python benchmarks/bench_rerank.py                           # MARS: 1,980 queries x 11,310 gallery, 2048-d
    python benchmarks/bench_rerank.py --add-query-to-gallery    # MARS as released: 1,980 x 13,290
    python benchmarks/bench_rerank.py --num-query 300 --num-gallery 2000   # a quick look

The parent draws clustered features (identities with several tracklets, six cameras, like MARS's test set;
seeded) and writes them to files. Every method runs in a fresh process (spawned) that reads them, records its
resident memory just before the call and its peak (``ru_maxrss``) after it, and hands its (Nq, Ng) distances back
through a file. The parent ranks them under
the protocol (mAP, rank-1, mINP) and compares the two re-rankings. torchreid is given the ``1 - cos`` matrices
that ``sinet-eval --rerank`` re-ranks; it builds them from one matrix product per block, the blocks from one per
row block, so the two differ by float32 rounding (the algorithm itself is equal to the last bit:
``tests/test_protocols.py``).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def features(nq: int, ng: int, dim: int, seed: int = 0):
    """Clustered embeddings: ~3 gallery tracklets per identity plus distractors, six cameras; queries drawn from the
    gallery identities (so every query has matches)."""
    g = torch.Generator().manual_seed(seed)  # identities and cameras first: they do not depend on dim
    ids = max(2, ng // 18)
    g_pids = torch.randint(0, ids, (ng,), generator=g)
    g_pids[: ng // 20] = -1  # distractors (MARS's pid 0 rows): no identity
    q_pids = g_pids[torch.randint(ng // 20, ng, (nq,), generator=g)]
    g_cams, q_cams = torch.randint(0, 6, (ng,), generator=g), torch.randint(0, 6, (nq,), generator=g)
    centers = torch.randn(ids, dim, generator=g)
    noise = 3.3  # same-identity cosine ~0.08 against a spread of ~0.02 between strangers
    gf = torch.where((g_pids >= 0)[:, None], centers[g_pids.clamp_min(0)], torch.randn(ng, dim, generator=g))
    gf = gf + noise * torch.randn(ng, dim, generator=g)
    qf = centers[q_pids] + noise * torch.randn(nq, dim, generator=g)
    return qf, gf, q_pids.numpy(), q_cams.numpy(), g_pids.numpy(), g_cams.numpy()


def _rss_mb() -> float:
    with open('/proc/self/statm') as fh:
        return int(fh.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def _child(method: str, chunk: int, tmp: str, queue) -> None:
    from reid_eval.postprocess import AQEOptions, RerankOptions, average_query_expansion, k_reciprocal_distances
    from reid_eval.search import _re_ranking, cosine_distance_matrix

    qf, gf = (torch.from_numpy(np.load(Path(tmp) / f'{x}.npy')) for x in ('qf', 'gf'))
    re_ranking = _re_ranking()
    rr, aqe = RerankOptions(), AQEOptions()  # the defaults sinet-eval uses

    def cos(a, b):
        return cosine_distance_matrix(a, b).numpy()

    base = _rss_mb()
    t = time.perf_counter()
    if method == 'torchreid':
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            dist = re_ranking(cos(qf, gf), cos(qf, qf), cos(gf, gf), k1=rr.k1, k2=rr.k2, lambda_value=rr.lambda_value)
    elif method == 'blocks':
        dist = k_reciprocal_distances(qf, gf, rr.k1, rr.k2, rr.lambda_value, chunk=chunk)
    elif method == 'aqe':
        q2, g2 = average_query_expansion(qf, gf, k=aqe.k, alpha=aqe.alpha, chunk=chunk)
        dist = -(F.normalize(q2, dim=1) @ F.normalize(g2, dim=1).t()).numpy()
    else:  # the plain cosine distances, for scale
        dist = -(F.normalize(qf, dim=1) @ F.normalize(gf, dim=1).t()).numpy()
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    np.save(Path(tmp) / f'{method}.npy', dist)
    queue.put((seconds, base, peak))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--num-query', type=int, default=1980)
    p.add_argument('--num-gallery', type=int, default=11310)
    p.add_argument('--dim', type=int, default=2048)
    p.add_argument('--add-query-to-gallery', action='store_true', help="MARS's released rule: gallery = query + it")
    p.add_argument('--chunk', type=int, default=256, help='rows per block (sinet-eval: --rank-chunk)')
    p.add_argument('--methods', nargs='+', default=['plain', 'aqe', 'blocks', 'torchreid'],
                   choices=['plain', 'aqe', 'blocks', 'torchreid'])
    args = p.parse_args(argv)
    from reid_eval.ranking import rank_distances

    qf, gf, q_pids, q_cams, g_pids, g_cams = features(args.num_query, args.num_gallery, args.dim)
    if args.add_query_to_gallery:
        gf = torch.cat([qf, gf])
        g_pids, g_cams = np.concatenate([q_pids, g_pids]), np.concatenate([q_cams, g_cams])
    ng = len(g_pids)
    print(f'machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, '
          f'{torch.get_num_threads()} torch threads; numpy {np.__version__}, torch {torch.__version__}')
    what = ' (query + gallery)' if args.add_query_to_gallery else ''
    print(f'{args.num_query} queries x {ng} gallery tracklets{what}, {args.dim}-d clustered features; re-ranking '
          f'k1 20, k2 6, lambda 0.3; AQE k 5, alpha 3; blocks of {args.chunk} rows\n')
    labels = {'plain': 'cosine distances (plain)', 'aqe': 'AQE + cosine distances',
              'blocks': 'rerank: reid_eval blocks', 'torchreid': 'rerank: torchreid re_ranking'}
    print(f'{"method":<32}{"seconds":>9}{"peak RSS GB":>13}{"above start GB":>16}{"mAP":>7}{"R1":>7}{"mINP":>7}')
    ctx = mp.get_context('spawn')
    dists = {}
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / 'qf.npy', qf.numpy())
        np.save(Path(tmp) / 'gf.npy', gf.numpy())
        del qf, gf
        for m in args.methods:
            queue = ctx.Queue()
            proc = ctx.Process(target=_child, args=(m, args.chunk, tmp, queue))
            proc.start()
            proc.join()
            if proc.exitcode != 0:
                print(f'{labels[m]:<32} failed (exit code {proc.exitcode}; killed for lack of memory?)')
                continue
            seconds, base, peak = queue.get()
            dists[m] = np.load(Path(tmp) / f'{m}.npy')
            r = rank_distances(dists[m], q_pids, q_cams, g_pids, g_cams)
            print(f'{labels[m]:<32}{seconds:9.1f}{peak / 1024:13.2f}{(peak - base) / 1024:16.2f}'
                  f'{r["mAP"]:7.2f}{r["rank1"]:7.2f}{r["mINP"]:7.2f}', flush=True)
    if 'blocks' in dists and 'torchreid' in dists:
        a, b = dists['blocks'], dists['torchreid']
        same_top = (np.argsort(a, axis=1)[:, :10] == np.argsort(b, axis=1)[:, :10]).mean()
        print(f'\nblocks vs torchreid: max |difference| {np.abs(a - b).max():.2e}; the same top-10 gallery '
              f'entries in the same order: {100 * same_top:.2f}%')
    return 0


if __name__ == '__main__':
    sys.exit(main())
