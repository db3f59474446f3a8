"""Protocols beyond the released one (issue 19): mINP, k-reciprocal re-ranking, AQE, the gallery rule, image-to-video
queries and --compare, each against an independent plain computation; the default output is unchanged."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import reid_eval
from reid_eval.datasets import load_dataset
from reid_eval.paper import paper_metrics
from reid_eval.postprocess import (
    AQEOptions,
    RerankOptions,
    average_query_expansion,
    k_reciprocal_distances,
    re_ranking_blocks,
)
from reid_eval.protocol import evenly_spaced, query_frames, segment_firsts
from reid_eval.ranking import RANKERS, market1501_ranks, rank_distances, rank_metrics
from reid_eval.results import Embeddings
from reid_eval.synthetic import make_synthetic
from sinet_cli.eval import main as eval_main

SMALL = {'input_size': (3, 64, 32)}  # the family's model on 64x32 frames: the same code, 16x less work
QUIET = dict(mode='sampled', workers=0, progress=False, device='cpu', data_config=SMALL)


def _torchreid_re_ranking():
    from reid_eval.search import _re_ranking

    return _re_ranking()


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


def test_minp_in_cards_list_and_zoo_entries(capsys):
    """sinet-hub: mINP is recorded, shown in the card and the list; zoo entries recorded before it still work."""
    from sinet_timm import hub
    from sinet_timm._zoo import ZooConfigError, resolve_entry, validate_entry

    entry, path = resolve_entry('sinet_r50.mars')
    summary = {'dataset': 'mars', 'architecture': 'sinet_r50', 'mode': 'dense',
               'metrics': {'mAP': 86.07, 'rank1': 90.71, 'rank5': 96.5, 'rank10': 97.6, 'rank20': 98.4, 'mINP': 61.234}}
    ours = hub.results_to_ours(summary, entry)
    assert ours['mINP'] == 61.23
    card = hub.card_text(entry, ours)
    assert '| | mAP | rank-1 | rank-5 | rank-10 | rank-20 | mINP |' in card
    assert '| this checkpoint, `sinet-eval` (ours) | 86.1 | 90.7 | 96.5 | 97.6 | 98.4 | 61.2 |' in card
    assert '| paper (Bai et al., CVPR 2022) | 86.2 | 91.0 | - | - | - | - |' in card  # no mINP in the paper
    older = {k: v for k, v in ours.items() if k != 'mINP'}
    assert '| 98.4 | - |' in hub.card_text(entry, older)
    assert ' | not evaluated yet | | | | | |' in hub.card_text(entry, None)  # a cell per column
    hub.list_zoo()
    assert 'ours mINP' in capsys.readouterr().out
    validate_entry(dict(entry, metrics=dict(entry['metrics'], ours=ours)), path)
    with pytest.raises(ZooConfigError, match=r"'metrics\.ours\.mINP': expected a number in \[0, 100\]"):
        validate_entry(dict(entry, metrics=dict(entry['metrics'], ours=dict(ours, mINP=161.0))), path)
    ok, table = hub.compare_metrics(ours, dict(summary['metrics'], mINP=50.0))
    assert ok and 'mINP' in table  # shown, not gated


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


# ---------------------------------------------------------------------------------------------------------
# k-reciprocal re-ranking


def _blocks(nq: int, ng: int, d: int, seed: int, levels: int | None = None, duplicates: bool = False,
            asymmetric: bool = False) -> np.ndarray:
    """A (nq+ng)^2 cosine distance matrix of clustered features (queries first)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=((nq + ng) // 5, d))
    x = centers[rng.integers(0, len(centers), nq + ng)] + 0.7 * rng.normal(size=(nq + ng, d))
    if duplicates:  # the released MARS rule: the queries are in the gallery too
        x[nq:2 * nq] = x[:nq]
    xn = F.normalize(torch.tensor(x, dtype=torch.float32), dim=1)
    a = (1 - xn @ xn.t()).clamp_min(0).numpy()
    if levels:
        a = np.minimum(np.floor(a * levels), np.floor(a * levels).T).astype(np.float32)
    if asymmetric:
        a = a + rng.random(a.shape).astype(np.float32) * 1e-3
    return a


@pytest.mark.parametrize('nq,ng,k1,k2,lam,chunk,kw', [
    (30, 120, 20, 6, 0.3, 7, {}),  # torchreid's defaults, blocks of 7 rows
    (30, 120, 20, 6, 0.3, 10_000, {}),  # one block
    (25, 80, 5, 1, 0.5, 13, {}),  # k2 = 1: no local query expansion
    (25, 80, 7, 3, 0.0, 13, {'levels': 8}),  # many ties (argsort tie order must be torchreid's)
    (20, 90, 20, 6, 0.3, 16, {'duplicates': True}),  # queries repeated in the gallery: exact ties
    (20, 90, 20, 6, 0.3, 16, {'asymmetric': True}),  # torchreid transposes: the blocks are read as it reads them
    (3, 10, 20, 6, 0.3, 4, {}),  # fewer entries than k1
])
def test_rerank_in_blocks_equals_torchreid_to_the_last_bit(nq, ng, k1, k2, lam, chunk, kw):
    a = _blocks(nq, ng, 8, seed=nq + ng, **kw)
    qq, qg, gg = a[:nq, :nq], a[:nq, nq:], a[nq:, nq:]
    combined = np.block([[qq, qg], [qg.T, gg]])  # what torchreid builds (it transposes it after normalising)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ref = _torchreid_re_ranking()(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam)
    ours = re_ranking_blocks(lambda lo, hi: combined.T[lo:hi], nq, nq + ng, k1=k1, k2=k2, lambda_value=lam,
                             chunk=chunk)
    assert ours.dtype == ref.dtype == np.float32 and ours.shape == (nq, ng)
    assert np.array_equal(ours, ref)


def test_rerank_of_embeddings_equals_torchreid_applied_by_hand():
    """rank_variants' rerank row: torchreid's re_ranking of the 1 - cos matrices, ranked under the protocol."""
    rng = np.random.default_rng(5)
    nq, ng = 24, 100
    q_pids, q_cams, g_pids, g_cams = _random_ids(rng, nq, ng)
    centers = torch.randn(14, 32, generator=torch.Generator().manual_seed(5))
    qf = centers[q_pids] + 0.9 * torch.randn(nq, 32, generator=torch.Generator().manual_seed(6))
    gf = centers[np.maximum(g_pids, 0)] + 0.9 * torch.randn(ng, 32, generator=torch.Generator().manual_seed(7))

    def cos(a, b):
        return (1 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).t()).clamp_min(0).numpy()

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        by_hand = _torchreid_re_ranking()(cos(qf, gf), cos(qf, qf), cos(gf, gf))
    ours = k_reciprocal_distances(qf, gf, chunk=10)
    assert np.abs(ours - by_hand).max() < 1e-5  # the same algorithm; the 1 - cos blocks round differently
    assert (np.argsort(ours, axis=1)[:, :5] == np.argsort(by_hand, axis=1)[:, :5]).mean() > 0.99
    q = Embeddings(qf, torch.as_tensor(q_pids), torch.as_tensor(q_cams), [f'q{i}' for i in range(nq)],
                   torch.arange(nq))
    g = Embeddings(gf, torch.as_tensor(g_pids), torch.as_tensor(g_cams), [f'g{i}' for i in range(ng)],
                   torch.arange(nq, nq + ng))
    variants, seconds = reid_eval.rank_variants(q, g, rerank=RerankOptions(), chunk=10)
    assert list(variants) == ['rerank'] and set(seconds) == {'rerank'}
    plain = rank_distances(by_hand, q_pids, q_cams, g_pids, g_cams)
    for k in ('mAP', 'rank1', 'rank5', 'mINP'):
        assert variants['rerank'][k] == pytest.approx(plain[k], abs=1e-9), k
    assert variants['rerank']['mINP'] == pytest.approx(_plain_minp(by_hand, q_pids, q_cams, g_pids, g_cams)[0])


def test_rerank_and_aqe_options_are_checked():
    for bad, flag in ((RerankOptions(k1=0), '--rerank-k1'), (RerankOptions(k2=0), '--rerank-k2'),
                      (RerankOptions(lambda_value=1.5), '--rerank-lambda'), (AQEOptions(k=0), '--aqe-k'),
                      (AQEOptions(alpha=float('nan')), '--aqe-alpha')):
        with pytest.raises(reid_eval.EvalError, match=flag):
            bad.validate()
    with pytest.raises(reid_eval.EvalError, match='rerank must be a RerankOptions'):
        reid_eval.EvalOptions(rerank=True).validate()
    with pytest.raises(reid_eval.EvalError, match='--add-query-to-gallery must be one of auto, yes, no'):
        reid_eval.EvalOptions(add_query_to_gallery='always').validate()
    with pytest.raises(reid_eval.EvalError, match='--query-frames must be a positive number'):
        reid_eval.EvalOptions(query_frames=0).validate()


# ---------------------------------------------------------------------------------------------------------
# AQE


def _plain_aqe(feats: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """fast-reid's aqe by hand: each embedding -> the mean of its k most similar (itself included), weighted by
    cos^alpha."""
    normed = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    out = []
    for i in range(len(feats)):
        sim = normed @ normed[i]
        top = np.argsort(-sim, kind='stable')[:k]
        out.append(np.mean(feats[top] * (sim[top] ** alpha)[:, None], axis=0))
    return np.stack(out)


@pytest.mark.parametrize('k,alpha,chunk', [(5, 3.0, 4), (1, 3.0, 1000), (3, 1.0, 7)])
def test_aqe_matches_a_plain_loop(k, alpha, chunk):
    g = torch.Generator().manual_seed(2)
    qf, gf = torch.randn(13, 10, generator=g), torch.randn(40, 10, generator=g) * 3  # raw, not normalised
    q2, g2 = average_query_expansion(qf, gf, k=k, alpha=alpha, chunk=chunk)
    ref = _plain_aqe(torch.cat([qf, gf]).double().numpy(), k, alpha)
    np.testing.assert_allclose(torch.cat([q2, g2]).numpy(), ref, rtol=1e-5, atol=1e-6)
    if k == 1:  # only itself, with weight 1
        torch.testing.assert_close(torch.cat([q2, g2]), torch.cat([qf, gf]))
    # the AQE row ranks the expanded embeddings under the plain protocol
    rng = np.random.default_rng(3)
    q_pids, q_cams, g_pids, g_cams = _random_ids(rng, 13, 40)
    q = Embeddings(qf, torch.as_tensor(q_pids), torch.as_tensor(q_cams), list('abcdefghijklm'), torch.arange(13))
    gal = Embeddings(gf, torch.as_tensor(g_pids), torch.as_tensor(g_cams), [str(i) for i in range(40)],
                     torch.arange(13, 53))
    variants, _ = reid_eval.rank_variants(q, gal, aqe=AQEOptions(k=k, alpha=alpha), rerank=RerankOptions(), chunk=5)
    assert list(variants) == ['aqe', 'rerank', 'aqe_rerank']
    assert variants['aqe'] == rank_metrics(q2, g2, q_pids, q_cams, g_pids, g_cams, chunk=5)
    both = k_reciprocal_distances(q2, g2, chunk=5)
    assert variants['aqe_rerank'] == rank_distances(both, q_pids, q_cams, g_pids, g_cams, chunk=5)


def test_non_finite_distances_or_expansions_are_refused_not_ranked():
    """A fractional AQE alpha on a negative similarity is NaN (fast-reid's formula); neither it nor any NaN distance
    (re-ranking, a caller's matrix) may reach the ranking, where NaN would sort anywhere and give a wrong mAP."""
    g = torch.Generator().manual_seed(4)
    qf, gf = torch.randn(6, 8, generator=g), torch.randn(20, 8, generator=g)  # random: negative similarities
    with pytest.raises(reid_eval.EvalError, match='alpha 2.5 gave non-finite embeddings.*use an integer --aqe-alpha'):
        average_query_expansion(qf, gf, k=26, alpha=2.5)  # all neighbours: negative similarities among them
    q2, g2 = average_query_expansion(qf, gf, k=26, alpha=3.0)  # an integer power is defined for negatives
    assert torch.isfinite(torch.cat([q2, g2])).all()
    rng = np.random.default_rng(5)
    q_pids, q_cams, g_pids, g_cams = _random_ids(rng, 6, 20)
    dist = F.normalize(qf, dim=1) @ F.normalize(gf, dim=1).t()
    assert np.isfinite(rank_distances(-dist.numpy(), q_pids, q_cams, g_pids, g_cams, chunk=4)['mAP'])
    bad = -dist.numpy()
    bad[:, 3] = np.nan  # one gallery entry: every query's row
    for ranker in RANKERS:
        with pytest.raises(reid_eval.EvalError, match=r'distances of queries 0\.\.3 hold non-finite values'):
            rank_distances(bad, q_pids, q_cams, g_pids, g_cams, chunk=4, ranker=ranker)


# ---------------------------------------------------------------------------------------------------------
# the gallery rule and image-to-video queries, on a tiny synthetic MARS


@pytest.fixture(scope='module')
def mars(tmp_path_factory) -> Path:
    return make_synthetic('mars', tmp_path_factory.mktemp('protocols') / 'mars', num_ids=6, lengths=(2, 3, 6, 9))


@pytest.fixture(scope='module')
def model():
    return reid_eval.load_model('vreid_r50', pretrained=False, seed=0, data_config=SMALL)


@pytest.fixture(scope='module')
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp('feature-cache')


def test_gallery_rule_yes_no_auto(mars, model, cache):
    auto = reid_eval.evaluate(model, 'mars', mars, cache_dir=cache, **QUIET)
    yes = reid_eval.evaluate(model, 'mars', mars, cache_dir=cache, add_query_to_gallery='yes', **QUIET)
    no = reid_eval.evaluate(model, 'mars', mars, cache_dir=cache, add_query_to_gallery='no', **QUIET)
    nq = auto.per_split[0].num_query
    data = load_dataset('mars', mars)
    assert nq == len(data.query) and no.per_split[0].num_gallery == len(data.gallery)
    assert auto.per_split[0].num_gallery == yes.per_split[0].num_gallery == nq + len(data.gallery)
    assert auto.metrics == yes.metrics and auto.protocol == yes.protocol
    assert 'MARS gallery = query + gallery' in auto.protocol and 'released' not in auto.protocol
    assert 'MARS gallery = gallery only (query not added) (not the released rule)' in no.protocol
    assert auto.gallery_rule == {'query_added': True, 'setting': 'auto', 'released_rule': True,
                                 'description': 'MARS gallery = query + gallery'}
    assert no.to_json()['gallery_rule']['query_added'] is False and no.gallery_rule['setting'] == 'no'
    # by hand: the same embeddings ranked against the gallery with and without the queries
    q, g = no.query, no.gallery
    torch.testing.assert_close(auto.gallery.features, torch.cat([q.features, g.features]))
    assert no.metrics['mAP'] == reid_eval.rank(q, g)['mAP']
    with_q = Embeddings(torch.cat([q.features, g.features]), torch.cat([q.pids, g.pids]),
                        torch.cat([q.camids, g.camids]), q.names + g.names, torch.cat([q.tracklet_ids, g.tracklet_ids]))
    assert auto.metrics['mAP'] == reid_eval.rank(q, with_q)['mAP']
    # every output states the rule, whatever the dataset: PRID-2011's released rule keeps the query out
    assert reid_eval.evaluator.gallery_description('prid2011', False) == \
        'PRID-2011 gallery = gallery only (query not added)'
    assert reid_eval.evaluator.gallery_description('prid2011', True) == \
        'PRID-2011 gallery = query + gallery (not the released rule)'


def test_evenly_spaced_query_frames():
    frames = [f'f{i:02d}' for i in range(10)]
    assert evenly_spaced(frames, 1) == ['f05']  # the middle frame
    assert evenly_spaced(frames, 2) == ['f02', 'f07']
    assert evenly_spaced(frames, 4) == ['f01', 'f03', 'f06', 'f08']
    assert evenly_spaced(frames, 10) == frames == evenly_spaced(frames, 99)  # all of a short tracklet
    assert evenly_spaced(['a', 'b'], 1) == ['b']
    with pytest.raises(reid_eval.EvalError):
        evenly_spaced([], 1)


def test_query_frames_embed_the_chosen_frames_gallery_whole(mars, model, cache):
    plain = reid_eval.evaluate(model, 'mars', mars, cache_dir=cache, **QUIET)
    i2v = reid_eval.evaluate(model, 'mars', mars, cache_dir=cache, query_frames=1, **QUIET)
    data = load_dataset('mars', mars)
    nq = len(data.query)
    # each query is its middle frame, embedded on its own: one clip of that frame (loop-padded), as a one-frame
    # tracklet is
    single = reid_eval.extract(model, [[paths[len(paths) // 2]] for paths, _, _ in data.query], **QUIET)
    torch.testing.assert_close(i2v.query.features, single, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(i2v.query.features, plain.query.features)
    # the gallery (with MARS's released rule, the queries too) keeps whole tracklets: the default run's features
    torch.testing.assert_close(i2v.gallery.features, plain.gallery.features)
    assert i2v.gallery.names[:nq] == i2v.query.names and i2v.gallery.tracklet_ids[:nq].tolist() == list(range(nq))
    assert 'image-to-video: queries from 1 frame each (the middle one), gallery tracklets whole' in i2v.protocol
    assert i2v.to_json()['query_frames'] == 1
    # the cache: the default run's shards are reused; the query frames have their own folder (another plan digest)
    cache_info = i2v.per_split[0].cache
    assert cache_info['reused_shards'] >= 1 and cache_info['query_folder'] != cache_info['folder']
    assert Path(cache_info['query_folder']).name.startswith('mars-split0-sampled-query1-')
    # N > 1: evenly spaced frames; without the query in the gallery, it is all N-frame queries vs the gallery
    three = reid_eval.evaluate(model, 'mars', mars, cache_dir=cache, query_frames=3, add_query_to_gallery='no',
                               **QUIET)
    by_hand = reid_eval.extract(model, [evenly_spaced(p, 3) for p, _, _ in data.query], **QUIET)
    torch.testing.assert_close(three.query.features, by_hand, rtol=1e-5, atol=1e-5)
    assert len(three.gallery) == len(data.gallery)
    assert three.metrics['mAP'] == reid_eval.rank(three.query, three.gallery)['mAP']


# ---------------------------------------------------------------------------------------------------------
# the command: labelled rows, the JSON, --compare


def _cli(tmp_path: Path, mars: Path, out: str, *args: str) -> tuple[int, dict]:
    path = tmp_path / out
    code = eval_main(['--model', 'vreid_r50', '--no-pretrained', '--dataset', 'mars', '--root', str(mars),
                      '--mode', 'sampled', '--workers', '0', '--no-progress', '--device', 'cpu', '--cache-dir',
                      str(tmp_path / 'cache'), '--output', str(path), *args])
    return code, (json.loads(path.read_text()) if code == 0 else {})


def test_cli_rows_json_and_compare(mars, tmp_path, capsys):
    code, plain = _cli(tmp_path, mars, 'plain.json')
    assert code == 0
    printed = capsys.readouterr().out
    assert 'mINP' in printed and '+ rerank' not in printed and 'MARS gallery = query + gallery' in printed
    assert plain['rerank'] is None and plain['aqe'] is None and 'metrics_rerank' not in plain
    code, post = _cli(tmp_path, mars, 'post.json', '--rerank', '--rerank-k1', '10', '--aqe', '--aqe-k', '3')
    assert code == 0
    printed = capsys.readouterr().out
    table = printed.splitlines()[2:]  # a blank line, the title, then the header and the rows
    assert table[0].split() == ['mAP', 'rank1', 'rank5', 'rank10', 'rank20', 'mINP']
    labels = [line[2:18].strip() for line in table[1:5]]
    assert labels == ['ours', '+ AQE', '+ rerank', '+ AQE + rerank']
    assert '+ rerank: k-reciprocal re-ranking (k1 10, k2 6, lambda 0.3) of 1 - cos' in printed
    # the plain metrics stay the released protocol's, number for number; the others are separate blocks
    assert post['metrics'] == plain['metrics'] and post['per_split'][0]['metrics'] == plain['per_split'][0]['metrics']
    assert post['rerank']['k1'] == 10 and post['rerank']['k2'] == 6 and post['aqe'] == {
        'k': 3, 'alpha': 3.0, 'times': 1, 'implementation': "fast-reid's aqe, in row blocks (reid_eval.postprocess)"}
    for v in ('aqe', 'rerank', 'aqe_rerank'):
        assert set(post[f'metrics_{v}']) == {'mAP', 'rank1', 'rank5', 'rank10', 'rank20', 'mINP'}
        assert post['per_split'][0][f'metrics_{v}']['mAP'] == post[f'metrics_{v}']['mAP']
        assert f'rank_{v}' in post['per_split'][0]['timings_s']
    # a parameter without its switch
    assert _cli(tmp_path, mars, 'x.json', '--aqe-k', '3')[0] == 2
    assert '--aqe-k/--aqe-alpha set the parameters of --aqe: add --aqe' in capsys.readouterr().err

    # --compare: one table, a Markdown copy, old JSONs (no mINP, no recorded rule) still read
    old = dict(plain, metrics={k: v for k, v in plain['metrics'].items() if k != 'mINP'})
    for k in ('gallery_rule', 'query_frames', 'rerank', 'aqe'):
        old.pop(k)
    (tmp_path / 'old.json').write_text(json.dumps(old))
    md = tmp_path / 'table.md'
    runs = [str(tmp_path / n) for n in ('plain.json', 'post.json', 'old.json')]
    assert eval_main(['--compare', *runs, '--compare-output', str(md)]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[0].split() == ['model', 'dataset', 'split', 'protocol', 'mAP', 'R1', 'R5', 'R10', 'R20', 'mINP']
    assert len([ln for ln in lines if ln.startswith('vreid_r50')]) == 1 + 4 + 1
    assert 'sampled; query+gallery; + AQE (k 3, alpha 3) + rerank (k1 10, k2 6, lambda 0.3)' in printed
    assert f"{plain['metrics']['mAP']:.1f}" in lines[1] and f"{plain['metrics']['mINP']:.1f}" in lines[1]
    assert lines[6].rstrip().endswith('-')  # the old run has no mINP
    text = md.read_text()
    assert text.startswith('| model | dataset | split | protocol | mAP | R1 | R5 | R10 | R20 | mINP |\n|---|')
    assert text.count('\n| vreid_r50 (random weights) | mars | 0 | sampled; query+gallery') == 6
    # never overwritten without --overwrite; the default path is beside the first JSON
    assert eval_main(['--compare', *runs, '--compare-output', str(md)]) == 2
    assert 'exists; pass --overwrite' in capsys.readouterr().err
    assert eval_main(['--compare', *runs, '--compare-output', str(md), '--overwrite']) == 0
    assert eval_main(['--compare', runs[0]]) == 0 and (tmp_path / 'plain.compare.md').exists()
    capsys.readouterr()
    # files that are not results JSONs: one line, exit 2
    (tmp_path / 'junk.json').write_text('not json')
    (tmp_path / 'foreign.json').write_text(json.dumps({'accuracy': 0.9}))
    for bad, message in (('junk.json', 'is not JSON'), ('foreign.json', 'is not a sinet-eval results JSON'),
                         ('missing.json', 'no such results JSON')):
        assert eval_main(['--compare', runs[0], str(tmp_path / bad), '--compare-output', str(tmp_path / 'y.md')]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count('\n') == 1 and 'Traceback' not in err


def test_command_line_defaults_equal_the_librarys():
    from sinet_cli import _common

    assert _common.GALLERY_RULES == reid_eval.evaluator.GALLERY_RULES
    r, a = RerankOptions(), AQEOptions()
    assert _common.RERANK_DEFAULTS == {'k1': r.k1, 'k2': r.k2, 'lambda_value': r.lambda_value}
    assert _common.AQE_DEFAULTS == {'k': a.k, 'alpha': a.alpha}
    from sinet_cli.eval import ROW_LABELS

    assert ROW_LABELS == reid_eval.results.VARIANTS


def test_segment_first_query_frames():
    """VKD's image-to-video query is the first frame of the tracklet; N > 1: the first frame of each segment."""
    frames = [f'f{i:02d}' for i in range(10)]
    assert segment_firsts(frames, 1) == ['f00'] == query_frames(frames, 1, 'first')
    assert segment_firsts(frames, 3) == ['f00', 'f03', 'f06']
    assert segment_firsts(frames, 10) == frames == segment_firsts(frames, 99)
    assert query_frames(frames, 1) == ['f05']  # the default rule: the middle
    with pytest.raises(reid_eval.EvalError, match="unknown query frame rule 'last'"):
        query_frames(frames, 1, 'last')


def test_vkd_image_to_video_queries_with_the_first_frame_and_its_paper_numbers(mars, cache):
    """Under the vkd protocol, --query-frames 1 is VKD's image-to-video: each query is its tracklet's first frame
    and MARS's gallery keeps the whole query tracklets; the paper's I2V row is printed beside a zoo checkpoint's
    run (its V2V row beside the V2V run), the other entry's never."""
    loaded = reid_eval.load_model('vkd_r34', pretrained=False, seed=0, data_config=SMALL)
    kw = dict(workers=0, progress=False, device='cpu', cache_dir=cache)
    i2v = reid_eval.evaluate(loaded, 'mars', mars, query_frames=1, **kw)
    data = load_dataset('mars', mars)
    first = reid_eval.extract(loaded, [[paths[0]] for paths, _, _ in data.query], protocol='vkd', workers=0,
                              progress=False, device='cpu')
    torch.testing.assert_close(i2v.query.features, first, rtol=1e-5, atol=1e-5)
    assert "queries from 1 frame each (the first one, VKD's rule)" in i2v.protocol
    assert Path(i2v.per_split[0].cache['query_folder']).name.startswith('mars-split0-vkd-query1-first-')
    assert len(i2v.gallery) == len(data.query) + len(data.gallery)  # MARS: the query tracklets join, whole
    assert i2v.paper == {}  # random weights: nothing to compare
    # as if these were the released student's weights (the zoo entry a pretrained load records)
    loaded.random_weights, loaded.zoo_entry = False, 'vkd_r50.mars'
    loaded.architecture = 'vkd_r50'
    assert reid_eval.evaluate(loaded, 'mars', mars, query_frames=1, **kw).paper == {'mAP': 77.27, 'rank1': 83.89}
    assert reid_eval.evaluate(loaded, 'mars', mars, **kw).paper == {'mAP': 82.22, 'rank1': 88.74}
    assert reid_eval.evaluate(loaded, 'mars', mars, query_frames=2, **kw).paper == {}  # not what the paper measured
    loaded.zoo_entry = 'vkd_r50.mars_base'
    assert reid_eval.evaluate(loaded, 'mars', mars, **kw).paper == {'mAP': 81.13, 'rank1': 87.88}


def test_paper_numbers_belong_to_one_checkpoint_and_its_dataset():
    """Two zoo entries of one architecture on one dataset (VKD's student and teacher) have different numbers: a
    run gets its own entry's, and weights of unknown origin get none rather than either. On another dataset a
    checkpoint gets its architecture's row (SINet's iLIDS-VID rank-1 beside the MARS checkpoint)."""
    assert paper_metrics('vkd_r50', 'mars', 'vkd_r50.mars_base') == {'mAP': 81.13, 'rank1': 87.88}
    assert paper_metrics('vkd_r50', 'mars', 'vkd_r50.mars', kind='paper_i2v') == {'mAP': 77.27, 'rank1': 83.89}
    assert paper_metrics('vkd_r50', 'mars') == {}  # student or teacher: unknown
    assert paper_metrics('sinet_r50', 'mars') == paper_metrics('sinet_r50', 'mars', 'sinet_r50.mars') != {}
    assert paper_metrics('sinet_r50', 'ilidsvid', 'sinet_r50.mars') == paper_metrics('sinet_r50', 'ilidsvid') != {}
    assert paper_metrics('vkd_r50', 'dukev', 'vkd_r50.mars') == {}  # no Duke numbers in the zoo
    assert paper_metrics('sinet_r50', 'mars', 'sinet_r50.mars', kind='paper_i2v') == {}
