"""Protocols as data (issue 26) and camera ids through the stack (issue 27): a model's pretrained cfg names its test
protocol, ``protocol='auto'`` follows it and ``--protocol`` overrides it; models that take camera ids get each
tracklet's camera, or one line, or their mean camera when asked."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from conftest import read_json
from safetensors import safe_open

import reid_eval
from reid_eval.errors import EvalError
from reid_eval.protocol import PROTOCOLS, chunk_first_clip, consecutive_clips, get_protocol, make_clips
from reid_eval.synthetic import make_synthetic
from sinet_cli.eval import main as eval_main
from sinet_cli.extract import main as extract_main
from sinet_timm.errors import ModelInputError

SMALL = {'input_size': (3, 64, 32)}


@pytest.fixture(scope='module')
def prid(tmp_path_factory) -> Path:
    return make_synthetic('prid2011', tmp_path_factory.mktemp('protocols') / 'data', num_ids=12, lengths=(1, 5, 19))


# the clip rules, against the examples worked by hand from the authors' samplers
@pytest.mark.parametrize('n, expected', [
    (26, [(0, 4, 8, 12, 16, 20, 24, 25)]),  # ceil(26/8) = 4: chunks start at 0, 4, ..., 28 -> padded with 25
    (8, [tuple(range(8))]),
    (3, [(0, 1, 2, 2, 2, 2, 2, 2)]),  # fewer frames than chunks: each frame, then the last one
    (1, [(0,) * 8]),
    (17, [(0, 3, 6, 9, 12, 15, 16, 16)]),
])
def test_vkd_chunk_first_clip(n, expected):
    assert chunk_first_clip(list(range(n)), 8) == expected


@pytest.mark.parametrize('n, last', [
    (26, (24, 25, 24, 25, 24, 25, 24, 25)),  # the authors' own comment's example
    (16, tuple(range(8, 16))),  # a whole last run is kept as it is
    (3, (0, 1, 2, 0, 1, 2, 0, 1)),
    (9, (8,) * 8),
])
def test_tfclip_consecutive_clips(n, last):
    clips = consecutive_clips(list(range(n)), 8)
    assert clips[-1] == last and len(clips) == -(-n // 8)
    assert [f for c in clips[:-1] for f in c] == list(range(8 * (len(clips) - 1)))


def test_every_protocol_is_reachable_by_name():
    for name, p in PROTOCOLS.items():
        assert get_protocol(name) is p and make_clips(['a', 'b', 'c'], name, p.clip_len or 4)
    with pytest.raises(EvalError, match="unknown test protocol 'nope'; expected one of dense, sampled, vkd, tfclip"):
        get_protocol('nope')


class Declared(nn.Module):
    """A clip model whose pretrained cfg declares its protocol and, optionally, camera ids (like TF-CLIP's)."""

    def __init__(self, protocol: str = 'vkd', cameras: int | None = None):
        super().__init__()
        self.pretrained_cfg = dict(input_size=(3, 64, 32), interpolation='bilinear', mean=(0.5, 0.5, 0.5),
                                   std=(0.5, 0.5, 0.5), crop_pct=1.0, protocol=protocol,
                                   camera_input=cameras is not None, num_cameras=cameras)
        torch.manual_seed(0)
        self.proj = nn.Linear(3 * 4 * 2, 8)
        self.cam = nn.Parameter(torch.randn(cameras or 1, 8))
        self.seen: list[tuple[int, tuple[int, ...] | None]] = []

    def forward(self, x: torch.Tensor, camids: torch.Tensor | None = None) -> torch.Tensor:
        self.seen.append((x.shape[1], None if camids is None else tuple(camids.tolist())))
        emb = self.proj(nn.functional.adaptive_avg_pool2d(x.flatten(0, 1), (4, 2)).flatten(1))
        emb = emb.unflatten(0, x.shape[:2]).mean(1)
        if not self.pretrained_cfg['camera_input']:
            return emb
        if camids is None:
            if getattr(self, 'camera_fallback', None) != 'mean':
                raise ModelInputError('Declared needs camera ids')
            return emb + self.cam.mean(0)
        return emb + self.cam[camids]


def _eval(model, root, **kw):
    return reid_eval.evaluate(model, 'prid2011', root, workers=0, progress=False, device='cpu', cache=False, **kw)


def test_the_models_own_protocol_is_used_unless_one_is_named(prid):
    model = Declared('vkd')
    res = _eval(model, prid)
    assert res.mode == 'vkd' and res.per_split[0].protocol.startswith('vkd: one 8-frame clip')
    assert {t for t, _ in model.seen} == {8}  # 8-frame clips, one per tracklet
    assert res.per_split[0].frames == 8 * (res.per_split[0].num_query + res.per_split[0].num_gallery)
    dense = _eval(Declared('vkd'), prid, protocol='dense')
    assert dense.mode == 'dense' and dense.per_split[0].protocol.startswith('dense; cosine distance')
    assert _eval(Declared('vkd'), prid, mode='sampled').mode == 'sampled'  # the old name still works
    with pytest.raises(EvalError, match='--mode dense and --protocol vkd disagree'):
        _eval(Declared('vkd'), prid, mode='dense', protocol='vkd')
    with pytest.raises(EvalError, match="unknown test protocol 'vkd2'"):
        _eval(Declared('vkd2'), prid)


def test_tfclips_protocol_adds_the_queries_to_every_gallery(prid):
    res = _eval(Declared('tfclip'), prid)
    assert res.gallery_rule['query_added'] and res.gallery_rule['released_rule']
    assert 'not the released rule' not in res.gallery_rule['description']
    assert 'L2-normalised' in res.per_split[0].protocol
    sinet_rule = _eval(Declared('tfclip'), prid, protocol='dense')
    assert not sinet_rule.gallery_rule['query_added']  # PRID-2011's released rule under SINet's protocol


def test_camera_ids_reach_the_model(prid):
    model = Declared('tfclip', cameras=2)
    res = _eval(model, prid)
    data = reid_eval.load_dataset('prid2011', prid)
    cams = [c for _, _, c in list(data.query) + list(data.gallery)]
    seen = [c for _, batch in model.seen for c in batch]
    assert sorted(set(seen)) == sorted(set(cams)) == [0, 1] and len(seen) >= len(cams)
    assert res.metrics['mAP'] > 0


def test_unknown_cameras_or_no_cameras_are_one_line_unless_the_fallback_is_asked(prid, tmp_path):
    with pytest.raises(EvalError, match=r'camera ids up to 1, but the model has embeddings for 1 cameras.*'
                                        '--camera-fallback mean'):
        _eval(Declared('tfclip', cameras=1), prid)
    model = Declared('tfclip', cameras=1)
    res = _eval(model, prid, camera_fallback='mean')
    assert model.camera_fallback == 'mean' and {c for _, c in model.seen} == {None} and res.metrics['mAP'] > 0
    with pytest.raises(EvalError, match='--camera-fallback must be one of None, mean'):
        _eval(Declared('tfclip', cameras=2), prid, camera_fallback='median')


def test_extract_takes_camera_ids(prid):
    data = reid_eval.load_dataset('prid2011', prid)
    tracks = [reid_eval.InputTracklet(f't{i}', list(p)) for i, (p, _, _) in enumerate(data.gallery[:3])]
    with pytest.raises(EvalError, match='takes camera ids and 3 of 3 tracklets have none.*--camera-fallback mean'):
        reid_eval.extract(Declared('tfclip', cameras=2), tracks, workers=0, progress=False, device='cpu')
    model = Declared('tfclip', cameras=2)
    a = reid_eval.extract(model, tracks, camids=[1, 0, 1], workers=0, progress=False, device='cpu')
    assert {c for _, batch in model.seen for c in batch} == {0, 1}
    own = [reid_eval.InputTracklet(t.name, t.frames, camid=c) for t, c in zip(tracks, [1, 0, 1], strict=True)]
    b = reid_eval.extract(Declared('tfclip', cameras=2), own, workers=0, progress=False, device='cpu')
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    mean = reid_eval.extract(Declared('tfclip', cameras=2), tracks, camera_fallback='mean', workers=0,
                             progress=False, device='cpu')
    assert not torch.equal(mean, a)


def test_sinet_eval_names_the_protocol_it_ran(prid, tmp_path, capsys):
    out = tmp_path / 'r.json'
    assert eval_main(['--model', 'vreid_r50', '--no-pretrained', '--dataset', 'prid2011', '--root', str(prid),
                      '--protocol', 'vkd', '--workers', '0', '--no-progress', '--device', 'cpu', '--no-cache',
                      '--output', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'vkd: one 8-frame clip of the first frame of each of 8 chunks' in printed
    assert read_json(out)['mode'] == 'vkd'


def test_sinet_extract_takes_a_camera(prid, tmp_path, capsys):
    folder = tmp_path / 'tracks'
    data = reid_eval.load_dataset('prid2011', prid)
    for i, (paths, _, _) in enumerate(data.gallery[:2]):
        (folder / f't{i}').mkdir(parents=True)
        for p in paths:
            (folder / f't{i}' / Path(p).name).write_bytes(Path(p).read_bytes())
    out = tmp_path / 'f.safetensors'
    assert extract_main([str(folder), '--model', 'vreid_r50', '--no-pretrained', '--protocol', 'tfclip', '--camera',
                         '1', '--workers', '0', '--no-progress', '--device', 'cpu', '--thumbnails', '0', '--output',
                         str(out)]) == 0
    with safe_open(str(out), framework='pt') as f:
        assert f.get_tensor('features').shape[0] == 2 and json.loads(f.metadata()['clip_len']) in (4, 8)


# Computed with the code before protocols became data (commit 35ae894), on the data each test makes: the dense
# protocol's numbers, gallery features and protocol text must not move on any dataset layout. (That run and this
# code also gave bit-identical features: sha256 of the query and gallery features, checked when the change landed.)
DENSE = ('dense; cosine distance; same-identity same-camera gallery entries removed (torchreid Market-1501 '
         'ranking, numpy ranker); ')
ADDED, ALONE = 'MARS gallery = query + gallery', '{} gallery = gallery only (query not added)'
GOLDEN = [
    ('mars', 'sinet_r50', 72.91666666666666, 75.0, 709758.5441328445, DENSE + ADDED),
    ('mars', 'sanet_r50', 81.25, 75.0, 390223.6381077422, DENSE + ADDED),
    ('lsvid', 'sinet_r50', 100.0, 100.0, 239979.67711581476, DENSE + ALONE.format('LS-VID')),
    ('lsvid', 'sanet_r50', 100.0, 100.0, 130453.24586554989, DENSE + ALONE.format('LS-VID')),
    ('ilidsvid', 'sinet_r50', 100.0, 100.0, 198425.05126061384, DENSE + ALONE.format('iLIDS-VID')),
    ('ilidsvid', 'sanet_r50', 100.0, 100.0, 106335.98487119062, DENSE + ALONE.format('iLIDS-VID')),
    ('prid2011', 'sinet_r50', 100.0, 100.0, 194251.07327656634, DENSE + ALONE.format('PRID-2011')),
    ('prid2011', 'sanet_r50', 100.0, 100.0, 107504.78219871048, DENSE + ALONE.format('PRID-2011')),
    ('dukev', 'sinet_r50', 100.0, 100.0, 520622.68227644503, DENSE + ALONE.format('DukeMTMC-VideoReID')),
    ('dukev', 'sanet_r50', 100.0, 100.0, 288528.79510402645, DENSE + ALONE.format('DukeMTMC-VideoReID')),
]


@pytest.mark.slow  # ten SINet / SANet evaluations at 256x128: about 2 min
@pytest.mark.parametrize('layout, arch, mAP, rank1, feature_sum, protocol', GOLDEN)
def test_sinet_and_sanet_results_are_unchanged_on_every_layout(tmp_path_factory, layout, arch, mAP, rank1,
                                                               feature_sum, protocol):
    root = make_synthetic(layout, tmp_path_factory.getbasetemp() / 'golden' / layout, num_ids=4, lengths=(1, 3, 6))
    res = reid_eval.evaluate(arch, layout, root, pretrained=False, seed=0, workers=0, progress=False, device='cpu',
                             cache=False)
    assert (res.metrics['mAP'], res.metrics['rank1'], res.per_split[0].protocol) == (mAP, rank1, protocol)
    assert res.mode == 'dense'
    assert float(res.gallery.features.double().sum()) == pytest.approx(feature_sum, rel=1e-6)
