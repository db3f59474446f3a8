"""reid_eval: protocols, ranking against an independent computation, the CLI end to end, cache and resume."""
from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import killing_a_child

from reid_eval.protocol import dense_clips, loop_pad, sampled_clip
from reid_eval.ranking import (
    RANKERS,
    market1501_ranks,
    rank_metrics,
    ranker_description,
    torchreid_ranker_compiled,
    valid_queries,
)
from reid_eval.synthetic import make_synthetic
from sinet_cli.eval import main

# ---------------------------------------------------------------------------------------------------------
# protocols


@pytest.mark.parametrize('n,expected', [
    (1, [('a', 'a', 'a', 'a')]),
    (2, [('a', 'a', 'b', 'b')]),  # [a, b] + [a, b] -> sorted a a b b
    (3, [('a', 'b', 'c', 'c')]),
    (5, [('a', 'c', 'd', 'e'), ('b', 'c', 'd', 'e')]),  # a b c d e + c d e -> a b c c d d e e, stride 2
    (8, [('a', 'c', 'e', 'g'), ('b', 'd', 'f', 'h')]),
])
def test_dense_clips_are_strided_after_loop_padding(n, expected):
    frames = list('abcdefgh'[:n])
    assert dense_clips(frames) == expected
    assert len(loop_pad(frames)) % 4 == 0


def test_dense_covers_every_frame_and_sampled_is_even():
    frames = [f'f{i:03d}.jpg' for i in range(23)]
    clips = dense_clips(frames)
    assert len(clips) == 6 and {f for c in clips for f in c} == set(frames)
    assert sampled_clip(frames) == [('f000.jpg', 'f005.jpg', 'f010.jpg', 'f015.jpg')]
    assert sampled_clip(['x']) == [('x', 'x', 'x', 'x')]


# ---------------------------------------------------------------------------------------------------------
# ranking


def _plain_metrics(qf, gf, q_pids, q_cams, g_pids, g_cams):
    """Independent, plain computation of the protocol: cosine distance, same-id same-cam removed."""
    qn = qf / qf.norm(dim=1, keepdim=True)
    gn = gf / gf.norm(dim=1, keepdim=True)
    dist = -(qn @ gn.t()).numpy()
    aps, cmcs = [], []
    for i in range(len(q_pids)):
        order = np.argsort(dist[i], kind='stable')
        keep = ~((g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i]))
        hits = (g_pids[order] == q_pids[i])[keep]
        if not hits.any():
            continue
        pos = np.flatnonzero(hits)
        aps.append(np.mean([(k + 1) / (p + 1) for k, p in enumerate(pos)]))
        cmcs.append([float(pos[0] < r) for r in (1, 5, 10, 20)])
    cmc = np.mean(cmcs, axis=0) * 100
    return {'mAP': 100 * float(np.mean(aps)), 'rank1': cmc[0], 'rank5': cmc[1], 'rank10': cmc[2],
            'rank20': cmc[3], 'num_valid_queries': len(aps)}


@pytest.mark.parametrize('ranker', RANKERS)
@pytest.mark.parametrize('chunk', [1, 7, 10_000])
def test_rank_metrics_match_an_independent_computation(chunk, ranker):
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(30, 16, generator=g)
    q_pids = np.arange(40) % 30
    g_pids = np.concatenate([np.arange(90) % 30, np.full(10, -1)])  # with distractors
    qf = centers[q_pids] + 0.8 * torch.randn(40, 16, generator=g)
    gf = torch.cat([centers[g_pids[:90]], torch.zeros(10, 16)]) + 0.8 * torch.randn(100, 16, generator=g)
    q_cams = np.zeros(40, dtype=int)
    g_cams = np.random.default_rng(0).integers(0, 3, 100)  # about a third of true matches are junk (same cam)
    q_pids[-1] = 99  # a query without any match is not counted
    ours = rank_metrics(qf, gf, q_pids, q_cams, g_pids, g_cams, chunk=chunk, ranker=ranker)
    ref = _plain_metrics(qf, gf, q_pids, q_cams, g_pids, g_cams)
    assert ours['num_valid_queries'] == ref['num_valid_queries']
    assert 30 <= ours['num_valid_queries'] < 40
    for k in ('mAP', 'rank1', 'rank5', 'rank10', 'rank20'):
        assert ours[k] == pytest.approx(ref[k], abs=1e-4), k  # torchreid accumulates CMC in float32
    assert 0 < ours['mAP'] < 100


@pytest.mark.parametrize('ranker', RANKERS)
def test_rank_metrics_tiny_gallery_with_same_camera_matches(ranker):
    """Fewer than 20 (or 50) gallery entries left after junk removal: torchreid alone would fail here."""
    g = torch.Generator().manual_seed(1)
    q_pids, q_cams = np.array([0, 1, 2, 3]), np.array([0, 0, 1, 1])
    g_pids = np.array([0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 4, 5])
    g_cams = np.array([0, 0, 1, 0, 1, 1, 0, 1, 1, 0, 0, 1])
    qf, gf = torch.randn(4, 8, generator=g), torch.randn(12, 8, generator=g)
    ours = rank_metrics(qf, gf, q_pids, q_cams, g_pids, g_cams, chunk=3, ranker=ranker)
    ref = _plain_metrics(qf, gf, q_pids, q_cams, g_pids, g_cams)
    for k in ('mAP', 'rank1', 'rank5', 'rank10', 'rank20'):
        assert ours[k] == pytest.approx(ref[k], abs=1e-4), k
    assert ours['rank20'] == 100.0


def test_rank_metrics_without_valid_queries():
    with pytest.raises(ValueError, match='no query identity'):
        rank_metrics(torch.randn(2, 4), torch.randn(2, 4), [1, 2], [0, 0], [3, 4], [1, 1])
    with pytest.raises(ValueError, match="ranker must be one of numpy, torchreid; got 'cython'"):
        rank_metrics(torch.randn(2, 4), torch.randn(2, 4), [1, 2], [0, 0], [1, 2], [1, 1], ranker='cython')


def test_ranker_description_names_the_code_that_ranks():
    assert ranker_description('numpy') == 'numpy ranker'
    kind = 'compiled Cython, float32 sums' if torchreid_ranker_compiled() else 'Python'
    assert ranker_description('torchreid') == f'torchreid ranker ({kind})'
    with pytest.raises(ValueError, match="ranker must be one of numpy, torchreid; got 'cython'"):
        ranker_description('cython')


@pytest.mark.parametrize('levels', [None, 5])  # continuous distances, and only 5 distinct values (many ties)
def test_market1501_ranks_equal_torchreids_evaluate_rank(levels):
    """Query by query, the whole-array ranker gives torchreid's CMC and AP (ties broken the same way)."""
    from reid_eval.datasets import torchreid_flavor

    prefix = 'torchreid.reid' if torchreid_flavor() == 'pypi' else 'torchreid'
    eval_market1501 = importlib.import_module(prefix + '.metrics.rank').eval_market1501
    rng = np.random.default_rng(3)
    nq, ng = 60, 400
    g_pids, g_cams = rng.integers(0, 40, ng), rng.integers(0, 4, ng)
    q_pids, q_cams = rng.integers(0, 45, nq), rng.integers(0, 4, nq)  # some identities absent from the gallery
    dist = rng.random((nq, ng), dtype=np.float32)
    if levels:
        dist = np.floor(dist * levels).astype(np.float32)
    cmc, ap, valid, _ = market1501_ranks(dist, q_pids, g_pids, q_cams, g_cams, max_rank=50)
    assert np.array_equal(valid, valid_queries(q_pids, q_cams, g_pids, g_cams))
    assert 0 < valid.sum() < nq
    assert not cmc[~valid].any() and not ap[~valid].any()
    for i in range(nq):
        if not valid[i]:
            continue
        ref_cmc, ref_ap = eval_market1501(dist[i:i + 1], q_pids[i:i + 1], g_pids, q_cams[i:i + 1], g_cams, 50)
        assert np.array_equal(cmc[i], ref_cmc.astype(bool)), i
        assert ap[i] == pytest.approx(ref_ap, rel=1e-12, abs=0), i
    # whole chunk at once, as rank_metrics calls it (the mean over valid queries)
    ref_cmc, ref_ap = eval_market1501(dist[valid], q_pids[valid], g_pids, q_cams[valid], g_cams, 50)
    assert np.allclose(cmc[valid].mean(0), ref_cmc, rtol=0, atol=1e-6)
    assert ap[valid].mean() == pytest.approx(ref_ap, rel=1e-12)


# ---------------------------------------------------------------------------------------------------------
# the CLI end to end on generated datasets in the benchmarks' real formats


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('data')
    for kind in ('mars', 'lsvid', 'prid2011'):
        make_synthetic(kind, root / kind)
    return root


@pytest.mark.parametrize('device', [pytest.param('cpu', marks=pytest.mark.slow),  # 24 s in CI
                                    pytest.param('cuda', marks=pytest.mark.gpu)])
def test_uint8_frames_normalised_on_device_give_timms_numbers(data_root, device):
    """FramePreprocess (what sinet-eval and sinet-extract use: uint8 frames, normalised on the device) gives the
    features of timm's float eval transform: bit for bit on a CPU, within TF32 rounding on CUDA."""
    import timm.data

    from reid_eval.datasets import load_dataset
    from reid_eval.extraction import ExtractPlan, FramePreprocess, extract_features
    from reid_eval.models import for_inference

    data = load_dataset('mars', data_root / 'mars')
    plan = ExtractPlan.build(list(data.query)[:4] + list(data.gallery)[:2], 'dense')
    torch.manual_seed(0)
    model = for_inference(timm.create_model('vreid_r50'), torch.device('cpu'))
    pre = FramePreprocess.for_model(model)
    timm_tf = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    frame = _first_frame(plan)
    assert pre.to_uint8(frame).dtype == torch.uint8
    torch.testing.assert_close(pre.normalize(pre.to_uint8(frame)), timm_tf(frame), atol=0, rtol=0)
    ref, _ = extract_features(model, plan, timm_tf, None, torch.device('cpu'), workers=0, progress=False)
    dev = torch.device(device)
    feats, stats = extract_features(model.to(dev), plan, pre, None, dev, batch_clips=3, workers=0, progress=False)
    assert stats.clips == len(plan.clips) and stats.model_seconds > 0
    if dev.type == 'cpu':
        torch.testing.assert_close(feats, ref, atol=0, rtol=0)
    else:  # cuDNN runs float32 convs in TF32 by default
        torch.testing.assert_close(feats, ref, atol=2e-3 * ref.abs().max().item(), rtol=0)


def test_amp_settings():
    """'auto' is bf16 on CUDA and off on CPU (as the CLIs document); anything else unknown is an error, never a
    silent float32 run."""
    from reid_eval.extraction import ExtractPlan, extract_features, resolve_amp

    cpu, cuda = torch.device('cpu'), torch.device('cuda')
    assert [resolve_amp(a, cuda) for a in ('auto', 'bf16', 'fp16', 'off')] == ['bf16', 'bf16', 'fp16', 'off']
    assert {resolve_amp(a, cpu) for a in ('auto', 'bf16', 'fp16', 'off')} == {'off'}
    plan = ExtractPlan.build([(('a.jpg',), 1, 0)], 'dense')
    for bad in ('bf15', 'fp32', ''):
        with pytest.raises(ValueError, match=f"amp must be one of auto, bf16, fp16, off; got '{bad}'"):
            extract_features(torch.nn.Identity(), plan, None, None, cpu, amp=bad)


def _first_frame(plan):
    from PIL import Image

    with Image.open(plan.clips[0][0]) as img:
        return img.convert('RGB')


def _eval(tmp_path: Path, *args: str, out: str = 'r.json') -> tuple[int, dict]:
    argv = ['--no-progress', '--workers', '0', '--cache-dir', str(tmp_path / 'cache'),
            '--output', str(tmp_path / out), '--overwrite', *args]
    code = main(argv)
    res = json.loads((tmp_path / out).read_text()) if code == 0 else {}
    return code, res


@pytest.mark.slow
@pytest.mark.heavy  # 30-140 s in CI: out of .ci/run (under 30 minutes), run by hand with -m heavy
def test_cli_mars_dense_json_and_cache_reuse(data_root, tmp_path, capsys):
    args = ('--model', 'vreid_r50', '--no-pretrained', '--dataset', 'mars', '--root', str(data_root / 'mars'),
            '--batch-clips', '16', '--shard-clips', '40')
    code, res = _eval(tmp_path, *args)
    assert code == 0
    printed = capsys.readouterr().out
    assert 'MARS gallery = query + gallery' in printed and 'rank20' in printed
    split = res['per_split'][0]
    assert res['dataset'] == 'mars' and res['mode'] == 'dense' and len(res['weights_sha256']) == 64
    assert split['num_gallery'] == split['num_query'] + 26  # query tracklets are added to MARS's gallery
    assert split['cache']['computed_shards'] >= 2 and split['cache']['reused_shards'] == 0
    assert set(res['metrics']) >= {'mAP', 'rank1', 'rank5', 'rank10', 'rank20', 'mINP'}
    assert res['versions']['torch'] == torch.__version__
    assert res['paper'] == {}  # vreid_r50 has no paper row on MARS in the zoo
    # a rerun reuses every shard and reproduces the numbers
    code, again = _eval(tmp_path, *args, out='r2.json')
    assert code == 0
    assert again['per_split'][0]['cache']['computed_shards'] == 0
    assert again['metrics'] == res['metrics']
    # torchreid's own evaluate_rank ranks the cached features to the same numbers (its CMC sums in float32; a
    # compiled deep-person-reid ranker sums AP in float32 too, and the protocol line says which one ran)
    code, tr = _eval(tmp_path, *args, '--ranker', 'torchreid', out='r4.json')
    assert code == 0 and ranker_description('torchreid') in tr['protocol'] and 'numpy ranker' in res['protocol']
    assert tr['metrics']['mAP'] == pytest.approx(res['metrics']['mAP'],
                                                 rel=1e-6 if torchreid_ranker_compiled() else 1e-12)
    assert tr['metrics'] == pytest.approx(res['metrics'], abs=1e-4)
    # --compile: the compiled wrapper (here dynamo with the eager backend; inductor by default) computes the same
    torch._dynamo.reset()
    code, compiled = _eval(tmp_path, *args, '--no-cache', '--compile', 'eager', out='r3.json')
    assert code == 0
    assert compiled['per_split'][0]['cache']['reused_shards'] == 0  # computed, not read from the cache
    assert compiled['metrics'] == pytest.approx(res['metrics'], abs=1e-6)


@pytest.mark.slow
@pytest.mark.heavy  # 30-140 s in CI: out of .ci/run (under 30 minutes), run by hand with -m heavy
def test_interrupted_extraction_resumes(data_root, tmp_path, capsys):
    """A bad frame stops the run naming the file; finished shards are kept and reused by the next run."""
    import shutil
    root = tmp_path / 'mars_copy'
    shutil.copytree(data_root / 'mars', root)
    frames = sorted((root / 'mars' / 'bbox_test').rglob('*.jpg'))
    victim = frames[-1]
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 3])  # truncated JPEG
    args = ('--model', 'vreid_r50', '--no-pretrained', '--dataset', 'mars', '--root', str(root),
            '--batch-clips', '8', '--shard-clips', '24', '--mode', 'sampled')
    code, _ = _eval(tmp_path, *args)
    err = capsys.readouterr().err
    assert code == 2 and 'cannot read frame' in err and victim.name in err
    cache_dirs = list((tmp_path / 'cache').rglob('shard_*.safetensors'))
    assert cache_dirs, 'finished shards must survive the failure'
    assert not list((tmp_path / 'cache').rglob('*.tmp'))  # no half-written shard
    victim.write_bytes(good)
    code, res = _eval(tmp_path, *args)
    assert code == 0
    assert res['per_split'][0]['cache']['reused_shards'] == len(cache_dirs)
    code, clean = _eval(tmp_path, *args, '--no-cache', out='clean.json')
    assert code == 0 and clean['metrics'] == res['metrics']


@pytest.mark.slow
@pytest.mark.heavy  # 30-140 s in CI: out of .ci/run (under 30 minutes), run by hand with -m heavy
def test_killed_decoding_worker_is_a_clear_error(data_root, tmp_path, capsys):
    """A DataLoader worker killed mid-run (SIGKILL, as the OOM killer does). torch reports it from a SIGCHLD
    handler wherever the main process is (often deep in the model's forward); the user gets one line saying what
    happened and what to do, and a rerun as advised works."""
    args = ['--no-progress', '--cache-dir', str(tmp_path / 'cache'), '--output', str(tmp_path / 'r.json'),
            '--model', 'vreid_r50', '--no-pretrained', '--dataset', 'mars', '--root', str(data_root / 'mars'),
            '--mode', 'sampled', '--batch-clips', '8']
    with killing_a_child() as killed:
        code = main([*args, '--workers', '2'])
    err = capsys.readouterr().err
    assert code == 2 and killed, err
    # torch's two reports: '(pid N) is killed by signal: Killed.' (SIGCHLD) or '(pid(s) N) exited unexpectedly'
    assert re.match(rf'error: a DataLoader worker died \(DataLoader worker \(pid(\(s\))? {killed[0].pid}\) ', err), err
    assert ('it was most likely killed for lack of memory: use fewer workers (--workers, now 2) or fewer clips '
            f'per batch (--batch-clips, now 8). Finished feature shards are kept in {tmp_path / "cache"}') in err
    assert 'Traceback' not in err and not (tmp_path / 'r.json').exists()
    assert main([*args, '--workers', '0']) == 0


@pytest.mark.slow
@pytest.mark.heavy  # 30-140 s in CI: out of .ci/run (under 30 minutes), run by hand with -m heavy
def test_cli_lsvid_and_prid_all_splits(data_root, tmp_path, capsys):
    code, res = _eval(tmp_path, '--model', 'vreid_r50', '--no-pretrained', '--dataset', 'lsvid',
                      '--root', str(data_root / 'lsvid'), '--mode', 'sampled')
    assert code == 0 and res['dataset'] == 'lsvid'
    assert 'MARS' not in res['protocol']
    code, res = _eval(tmp_path, '--model', 'sinet_r50', '--no-pretrained', '--dataset', 'prid', '--split', 'all',
                      '--root', str(data_root / 'prid2011'), '--mode', 'sampled', out='prid.json')
    assert code == 0
    assert res['splits'] == list(range(10)) and len(res['per_split']) == 10
    r1 = [s['metrics']['rank1'] for s in res['per_split']]
    assert res['metrics']['rank1'] == pytest.approx(np.mean(r1))
    assert res['metrics_std']['rank1'] == pytest.approx(np.std(r1))
    # random weights: titled as such, no paper numbers beside them (Table 1's SINet rank-1 on PRID-2011, 96.5, is
    # printed beside real weights: tests/test_api.py)
    assert res['paper'] == {} and res['random_weights'] is True
    printed = capsys.readouterr().out
    assert '+- std' in printed and 'sinet_r50 (random weights) on prid2011' in printed and 'paper' not in printed


@pytest.mark.parametrize('args,message', [
    (['--dataset', 'market1501', '--root', '.'], 'Valid names: mars, lsvid'),
    (['--model', 'resnet9000', '--dataset', 'mars', '--root', '.'], 'unknown model'),
    (['--dataset', 'mars'], '--root is needed'),
    (['--model', 'vreid_r50', '--no-pretrained', '--dataset', 'mars', '--root', '/nonexistent/data'],
     'Expected layout'),
    (['--model', 'vreid_r50', '--no-pretrained', '--dataset', 'prid2011', '--root', '.', '--split', 'x'],
     '--split must be'),
    (['--batch-clips', '0'], '--batch-clips must be a positive number'),
    (['--workers', '-1'], '--workers must be >= 0'),
])
def test_cli_bad_input(tmp_path, capsys, args, message):
    assert main(['--no-progress', '--output', str(tmp_path / 'o.json'), *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message shown on machines without a GPU')
def test_cuda_without_gpu_is_a_clear_error(tmp_path, capsys):
    assert main(['--device', 'cuda', '--output', str(tmp_path / 'o.json')]) == 2
    assert 'sees no CUDA GPU' in capsys.readouterr().err


def test_existing_output_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / 'mine.json'
    out.write_text('{"keep": true}')
    assert main(['--output', str(out)]) == 2
    assert '--overwrite' in capsys.readouterr().err and json.loads(out.read_text()) == {'keep': True}


@pytest.mark.slow
def test_torchrun_two_processes_match_one(data_root, tmp_path):
    """Feature extraction sharded over 2 ranks (gloo on CPU) gives the single-process numbers."""
    common = ['--model', 'vreid_r50', '--no-pretrained', '--dataset', 'lsvid', '--root', str(data_root / 'lsvid'),
              '--mode', 'sampled', '--workers', '0', '--no-progress', '--shard-clips', '8']
    code, single = _eval(tmp_path / 'one', *common[:-2], '--shard-clips', '8', out='one.json')
    assert code == 0
    out = tmp_path / 'two.json'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
                        '--master_port', '29517', '-m', 'reid_eval', *common,
                        '--cache-dir', str(tmp_path / 'cache2'), '--output', str(out)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    two = json.loads(out.read_text())
    assert two['world_size'] == 2
    assert two['metrics'] == pytest.approx(single['metrics'], abs=1e-4)


@pytest.mark.slow
def test_cli_evaluates_a_released_checkpoint(data_root, tmp_path):
    """--checkpoint takes the authors' .pth.tar; the architecture is read from its keys."""
    from released_reference import save_released_checkpoint
    ckpt = tmp_path / 'sbnet_mars.pth.tar'
    save_released_checkpoint(ckpt, 'sbnet', seed=0)
    code, res = _eval(tmp_path, '--checkpoint', str(ckpt), '--dataset', 'mars', '--root', str(data_root / 'mars'),
                      '--mode', 'sampled')
    assert code == 0
    assert res['architecture'] == 'sbnet_r50' and res['weights'].startswith('file:')
    assert res['paper'] == {'mAP': 85.7, 'rank1': 90.2}  # Table 2, base.+SBM on MARS
