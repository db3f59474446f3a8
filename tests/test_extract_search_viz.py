"""sinet-extract / sinet-search / sinet-viz on small generated tracklets with random-weight models (CPU, offline)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import reid_eval
from reid_eval import featurefile, search, viz
from reid_eval import tracklets as tracklets_lib
from reid_eval.errors import VizError
from reid_eval.models import weights_sha256
from reid_eval.synthetic import make_synthetic
from sinet_cli import extract as extract_cmd
from sinet_cli import search as search_cmd
from sinet_cli import viz as viz_cmd
from sinet_cli.eval import main as eval_main

MODEL = ['--model', 'vreid_r50', '--no-pretrained', '--device', 'cpu', '--workers', '0', '--no-progress',
         '--batch-clips', '4']


def _write_tracklet(folder: Path, n: int, seed: int, ext: str = 'png', size: tuple[int, int] = (64, 32)) -> None:
    """``n`` frames of a striped, coloured 'person' with per-frame noise; the look depends on ``seed``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    h, w = size
    base = rng.uniform(0, 255, (3, 3))  # head / torso / legs colours
    for i in range(n):
        img = np.zeros((h, w, 3))
        for band, (lo, hi) in enumerate(((0, h // 4), (h // 4, 3 * h // 5), (3 * h // 5, h))):
            img[lo:hi] = base[band]
        img[:, : w // 3 + i % 3] *= 0.6  # a shading that moves a little between frames
        img += rng.normal(0, 12, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f'{i + 1}.{ext}')


@pytest.fixture(scope='module')
def tracklets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('videos')
    _write_tracklet(root / 'query' / 'alice', 3, seed=1, ext='png')
    _write_tracklet(root / 'query' / 'bob', 1, seed=2, ext='jpg')  # a single frame: loop-padded to 4
    _write_tracklet(root / 'gallery' / 'carol', 4, seed=3, ext='bmp')
    _write_tracklet(root / 'gallery' / 'dave', 2, seed=4, ext='jpg')
    shutil.copytree(root / 'query' / 'alice', root / 'gallery' / 'alice_copy')  # the planted duplicate
    return root


@pytest.fixture(scope='module')
def feats(tracklets, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp('feats')
    paths = {'q': out / 'q.safetensors', 'g': out / 'g.safetensors'}
    for key, src in (('q', 'query'), ('g', 'gallery')):
        assert extract_cmd.main([str(tracklets / src), '--output', str(paths[key]), *MODEL]) == 0
    return paths


# ---------------------------------------------------------------------------------------------------------
# extraction


def test_extract_shape_names_metadata(feats):
    q = featurefile.load_features(feats['q'])
    assert q.names == ['alice', 'bob'] and q.features.shape == (2, 2048)
    assert torch.isfinite(q.features).all() and not torch.equal(q.features[0], q.features[1])
    assert q.metadata['model'] == 'vreid_r50' and len(q.weights_sha256) == 64
    assert q.metadata['mode'] == 'dense'
    assert load_file(str(feats['q']))['num_frames'].tolist() == [3, 1]
    g = featurefile.load_features(feats['g'])
    assert g.names == ['alice_copy', 'carol', 'dave'] and g.weights_sha256 == q.weights_sha256


def test_list_file_and_python_api_repeat_the_cli_exactly(tracklets, feats):
    """Determinism: a second extraction of the same tracklets (now from a list file with a folder line, a frame
    line, relative paths and a comment, through the Python API) gives identical embeddings."""
    import timm

    lst = tracklets / 'tracks.txt'
    lst.write_text('# my tracklets\nalice: query/alice\nquery/bob/1.jpg\n\n')
    found = tracklets_lib.find_tracklets(lst)
    assert [t.name for t in found] == ['alice', 'line3']
    assert [len(t.frames) for t in found] == [3, 1]
    torch.manual_seed(0)  # the weights --no-pretrained --seed 0 draws
    model = timm.create_model('vreid_r50', num_classes=0).eval()
    cli_feats = featurefile.load_features(feats['q'])
    assert weights_sha256(model) == cli_feats.weights_sha256
    ours = reid_eval.extract(model, found, batch_clips=4, device='cpu', workers=0, progress=False)
    assert ours.shape == (2, 2048) and torch.equal(ours, cli_feats.features)


def test_natural_frame_order(tmp_path):
    t = tmp_path / 't'
    t.mkdir()
    for name in ('f10.png', 'f2.png', 'f1.png', '.hidden'):
        (t / name).write_bytes(b'')
    assert [Path(p).name for p in tracklets_lib.list_frames(t)] == ['f1.png', 'f2.png', 'f10.png']
    assert [x.name for x in tracklets_lib.find_tracklets(t)] == ['t']  # a folder of frames is one tracklet


@pytest.mark.parametrize('case,message', [
    ('empty', 'is empty'),
    ('non_image', 'notes.txt'),
    ('missing', 'does not exist'),
    ('empty_tracklet', 'has no frames'),
    ('bad_list_line', 'line 2'),
    ('batch_clips', '--batch-clips must be a positive number'),
])
def test_extract_bad_input_is_a_clear_error(tmp_path, capsys, case, message):
    src = tmp_path / 'in'
    extra = ['--batch-clips', '0'] if case == 'batch_clips' else []
    if case in ('empty', 'batch_clips'):
        src.mkdir()
    elif case == 'non_image':
        _write_tracklet(src / 'alice', 2, seed=0)
        (src / 'alice' / 'notes.txt').write_text('not a frame')
    elif case == 'empty_tracklet':
        _write_tracklet(src / 'alice', 2, seed=0)
        (src / 'bob').mkdir()
    elif case == 'bad_list_line':
        _write_tracklet(tmp_path / 'alice', 2, seed=0)
        src = tmp_path / 'list.txt'
        src.write_text('alice\nnowhere/1.jpg\n')
    out = tmp_path / 'f.safetensors'
    assert extract_cmd.main([str(src), '--output', str(out), *MODEL, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and message in err and 'Traceback' not in err
    assert not out.exists()


def test_extract_unreadable_frame_and_existing_output(tmp_path, capsys):
    _write_tracklet(tmp_path / 'in' / 'alice', 2, seed=0, ext='jpg')
    (tmp_path / 'in' / 'alice' / '2.jpg').write_bytes(b'\xff\xd8 this is not a JPEG')
    out = tmp_path / 'f.safetensors'
    assert extract_cmd.main([str(tmp_path / 'in'), '--output', str(out), *MODEL]) == 2
    err = capsys.readouterr().err
    assert 'cannot read frame' in err and '2.jpg' in err and 'Traceback' not in err and not out.exists()
    out.write_bytes(b'keep me')
    assert extract_cmd.main([str(tmp_path / 'in'), '--output', str(out), *MODEL]) == 2
    assert '--overwrite' in capsys.readouterr().err and out.read_bytes() == b'keep me'


# ---------------------------------------------------------------------------------------------------------
# search


@pytest.mark.parametrize('rerank', [False, True])
def test_search_ranks_the_planted_duplicate_first(feats, tmp_path, capsys, rerank):
    out = tmp_path / 'matches.json'
    args = ['--query', str(feats['q']), '--gallery', str(feats['g']), '--topk', '3', '--output', str(out)]
    assert search_cmd.main(args + (['--rerank'] if rerank else [])) == 0
    printed = capsys.readouterr()
    assert 'query alice' in printed.out and 'warning' not in printed.err
    res = json.loads(out.read_text())
    alice = res['results'][0]
    assert alice['query'] == 'alice' and len(alice['matches']) == 3
    assert alice['matches'][0]['gallery'] == 'alice_copy'
    assert alice['matches'][0]['cosine_distance'] < 1e-4 < alice['matches'][1]['cosine_distance']
    dists = [m['distance'] for m in alice['matches']]
    assert dists == sorted(dists)
    assert (res['rerank'] is not None) == rerank


def test_search_csv_and_topk_larger_than_gallery(feats, tmp_path, capsys):
    out = tmp_path / 'm.csv'
    assert search_cmd.main(['-q', str(feats['q']), '-g', str(feats['g']), '-k', '10', '-o', str(out), '--quiet']) == 0
    rows = out.read_text().splitlines()
    assert rows[0] == 'query,rank,gallery,distance,cosine_distance'
    assert len(rows) == 1 + 2 * 3  # 2 queries x all 3 gallery tracklets
    assert rows[1].startswith('alice,1,alice_copy,')
    q, g = featurefile.load_features(feats['q']), featurefile.load_features(feats['g'])
    one, all_ = search.search(q, g, topk=3, chunk=1), search.search(q, g, topk=3)  # chunks change nothing
    assert [[m.gallery for m in r.matches] for r in one] == [[m.gallery for m in r.matches] for r in all_]
    assert [m.distance for r in one for m in r.matches] == pytest.approx(
        [m.distance for r in all_ for m in r.matches], abs=1e-6)


def test_search_warns_about_different_weights(feats, tmp_path, capsys):
    g = featurefile.load_features(feats['g'])
    other = featurefile.save_features(tmp_path / 'other.safetensors', g.features, g.names, model='sinet_r50.mars',
                                  weights_sha256='0' * 64)
    assert search_cmd.main(['-q', str(feats['q']), '-g', str(other), '--quiet']) == 0
    err = capsys.readouterr().err
    assert 'warning:' in err and 'not comparable' in err and 'sinet_r50.mars' in err


def test_search_bad_input(feats, tmp_path, capsys):
    small = featurefile.save_features(tmp_path / 'small.safetensors', torch.randn(3, 16), ['a', 'b', 'c'],
                                  model='tiny', weights_sha256='1' * 64)
    assert search_cmd.main(['-q', str(feats['q']), '-g', str(small)]) == 2
    err = capsys.readouterr().err
    assert '2048-d' in err and '16-d' in err and 'same model' in err
    assert search_cmd.main(['-q', str(tmp_path / 'nope.safetensors'), '-g', str(small)]) == 2
    assert 'does not exist' in capsys.readouterr().err
    (tmp_path / 'junk.safetensors').write_bytes(b'not safetensors')
    assert search_cmd.main(['-q', str(tmp_path / 'junk.safetensors'), '-g', str(small)]) == 2
    assert 'cannot read' in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# pictures


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert('RGB'), dtype=np.float32)


def test_select_frames():
    assert viz.select_frames(1, 8) == [0, 0, 0, 0]
    assert viz.select_frames(6, 8) == [0, 1, 1, 2, 3, 4, 4, 5]
    assert viz.select_frames(30, 8) == sorted(set(viz.select_frames(30, 8)))  # 8 distinct, in order
    with pytest.raises(VizError, match='multiple of 4'):
        viz.select_frames(10, 6)


def test_viz_cam_picture(tracklets, tmp_path, capsys):
    out = tmp_path / 'cam.png'
    args = ['cam', str(tracklets / 'gallery' / 'carol'), '--models', 'vreid_r50', 'sinet_r50', '--no-pretrained',
            '--frames', '4', '--frame-size', '64x32', '--device', 'cpu', '--output', str(out)]
    assert viz_cmd.main(args) == 0
    img = _png(out)
    # 4 frames of 32x64 px, rows: frames + 2 models (the documented layout)
    expected = (140 + 4 * 32 + 5 * 6, 24 + 16 + 3 * 64 + 4 * 6)
    assert img.shape[:2][::-1] == expected == viz.cam_picture_size(4, 2, (64, 32))
    assert img.std() > 20
    x0, top = viz.LABEL_W + viz.PAD, viz.HEADER_H + viz.TITLE_H + viz.PAD
    rows = [img[top + r * (64 + viz.PAD): top + r * (64 + viz.PAD) + 64, x0:x0 + 32] for r in range(3)]
    assert np.abs(rows[1] - rows[0]).mean() > 10  # the heat map is overlaid on the frame
    assert np.abs(rows[2] - rows[1]).mean() > 1  # and differs between the two models


def test_viz_cam_bad_input(tmp_path, capsys):
    assert viz_cmd.main(['cam', str(tmp_path / 'nope'), '--models', 'vreid_r50', '--no-pretrained']) == 2
    assert 'does not exist' in capsys.readouterr().err
    _write_tracklet(tmp_path / 't', 2, seed=0)
    assert viz_cmd.main(['cam', str(tmp_path / 't'), '--models', 'vreid_r50', '--frames', '6', '--no-pretrained']) == 2
    assert 'multiple of 4' in capsys.readouterr().err


@pytest.fixture(scope='module')
def run_json(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp('run')
    # PRID-2011 format (query camera a, gallery camera b): the smallest dataset the CLI evaluates
    root = make_synthetic('prid2011', tmp / 'data', num_ids=6, lengths=(1, 2, 3))
    out = tmp / 'run.json'
    code = eval_main(['--model', 'vreid_r50', '--no-pretrained', '--dataset', 'prid2011', '--root', str(root),
                      '--mode', 'sampled', '--no-cache', '--workers', '0', '--no-progress', '--device', 'cpu',
                      '--save-features', '--output', str(out)])
    assert code == 0
    return out


def test_eval_saves_features_and_cmc_plot(run_json):
    res = json.loads(run_json.read_text())
    assert res['features_file'] == 'run.features.safetensors' == res['per_split'][0]['features_file']
    assert res['cmc_plot'] == 'run.cmc.png'
    t = load_file(str(run_json.parent / res['features_file']))
    nq, ng = res['per_split'][0]['num_query'], res['per_split'][0]['num_gallery']
    assert t['query_features'].shape == (nq, 2048) and t['gallery_features'].shape == (ng, 2048)
    assert t['query_tracklets'].tolist() == list(range(nq))
    assert t['gallery_tracklets'].tolist() == list(range(nq, nq + ng))  # ids index query + gallery
    assert t['query_camids'].tolist() == [0] * nq and t['gallery_camids'].tolist() == [1] * ng
    assert sorted(t['query_pids'].tolist()) == sorted(t['gallery_pids'].tolist())
    cmc = _png(run_json.parent / res['cmc_plot'])
    assert cmc.shape[:2] == (420, 640) and cmc.std() > 10


def test_viz_ranks_picture(run_json, tmp_path):
    out = tmp_path / 'ranks.png'
    assert viz_cmd.main(['ranks', str(run_json), '--queries', '0', '1', '--topk', '3', '--output', str(out)]) == 0
    img = _png(out)
    assert img.shape[:2][::-1] == viz.ranks_picture_size(2, 3, 4, (96, 48)) == (4 * (4 * 48 + 8) + 5 * 6,
                                                                               24 + 2 * (16 + 96 + 8 + 6) + 6)
    assert img.std() > 20
    # the border colours follow the identities, ranked as the evaluation ranks (same id + camera removed)
    t = load_file(str(run_json.parent / 'run.features.safetensors'))
    dist = search.cosine_distance_matrix(t['query_features'], t['gallery_features'])
    cell_w, cell_h = 4 * 48 + 2 * viz.BORDER, 96 + 2 * viz.BORDER
    for row, q in enumerate((0, 1)):
        keep = ~((t['gallery_pids'] == t['query_pids'][q]) & (t['gallery_camids'] == t['query_camids'][q]))
        cand = torch.nonzero(keep).flatten()
        best = cand[torch.argsort(dist[q, cand], stable=True)][:3]
        y = viz.HEADER_H + row * (viz.TITLE_H + cell_h + viz.PAD) + viz.TITLE_H
        for r, j in enumerate(best.tolist()):
            x = viz.PAD + (r + 1) * (cell_w + viz.PAD)
            want = (0, 178, 0) if t['gallery_pids'][j] == t['query_pids'][q] else (217, 0, 0)
            assert np.abs(img[y + 1, x + 1] - want).max() <= 2, (row, r)


def test_viz_ranks_needs_saved_features(run_json, tmp_path, capsys):
    res = json.loads(run_json.read_text())
    res.pop('features_file')
    res['per_split'][0].pop('features_file')
    bare = tmp_path / 'bare.json'
    bare.write_text(json.dumps(res))
    assert viz_cmd.main(['ranks', str(bare)]) == 2
    assert '--save-features' in capsys.readouterr().err
    assert viz_cmd.main(['ranks', str(run_json), '--queries', '999']) == 2
    assert 'out of range' in capsys.readouterr().err


def test_viz_keeps_an_existing_picture(tmp_path, capsys):
    """sinet-viz never replaces a file the user has without --overwrite."""
    run = tmp_path / 'run.json'
    run.write_text(json.dumps({'model': 'm', 'dataset': 'd', 'mode': 'dense', 'metrics': {'cmc': [50.0, 100.0]},
                               'per_split': [{'metrics': {'cmc': [50.0, 100.0], 'mAP': 60.0}}]}))
    png = tmp_path / 'mine.png'
    png.write_bytes(b'user data')
    assert viz_cmd.main(['cmc', str(run), '-o', str(png)]) == 2
    assert '--overwrite' in capsys.readouterr().err and png.read_bytes() == b'user data'
