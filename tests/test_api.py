"""reid_eval as a library: evaluate / extract / rank on any model, equal to the commands to the last digit; one
error hierarchy; commands that parse before importing torch."""
from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import timm
import timm.data
import torch
import torch.nn as nn
from conftest import child_env, folder_bytes, layout_hub_cache, run_offline
from PIL import Image
from timm.models import save_for_hf

import reid_eval
from reid_eval.datasets import SPECS, load_dataset
from reid_eval.protocol import sampled_clip
from reid_eval.synthetic import make_synthetic
from sinet_cli.eval import main as eval_main
from sinet_timm.errors import SinetTimmError

QUIET = dict(mode='sampled', cache=False, workers=0, progress=False, device='cpu')


@pytest.fixture(scope='module')
def prid(tmp_path_factory) -> Path:
    # PRID-2011 format (query camera a, gallery camera b): the smallest dataset the evaluator takes
    return make_synthetic('prid2011', tmp_path_factory.mktemp('api') / 'data', num_ids=6, lengths=(1, 2, 3))


class TinyVideoNet(nn.Module):
    """A video re-ID model of someone else's: clips (B, T, 3, H, W) -> (B, 16)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 5, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        return self.conv(x.flatten(0, 1)).amax(dim=(-2, -1)).unflatten(0, (b, t)).mean(1)


def _plain_metrics(qf, gf, q_pids, q_cams, g_pids, g_cams) -> dict[str, float]:
    """The protocol, computed plainly: cosine distance, same-id same-camera gallery entries removed."""
    dist = -(torch.nn.functional.normalize(qf, dim=1) @ torch.nn.functional.normalize(gf, dim=1).t()).numpy()
    aps, r1 = [], []
    for i in range(len(q_pids)):
        order = np.argsort(dist[i], kind='stable')
        keep = ~((g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i]))
        hits = (g_pids[order] == q_pids[i])[keep]
        if hits.any():
            pos = np.flatnonzero(hits)
            aps.append(np.mean([(k + 1) / (p + 1) for k, p in enumerate(pos)]))
            r1.append(float(pos[0] == 0))
    return {'mAP': 100 * float(np.mean(aps)), 'rank1': 100 * float(np.mean(r1))}


def _by_hand(module: nn.Module, root: Path, transform) -> tuple[torch.Tensor, list, list]:
    """Embeddings of the sampled protocol computed without reid_eval's extraction: one clip per tracklet."""
    data = load_dataset('prid2011', root)
    tracklets = data.query + data.gallery
    out = []
    with torch.no_grad():
        for paths, _, _ in tracklets:
            clip = [transform(Image.open(p).convert('RGB')) for p in sampled_clip(paths)[0]]
            out.append(module(torch.stack(clip)[None])[0])
    return torch.stack(out), [p for _, p, _ in tracklets], [c for _, _, c in tracklets]


def test_evaluate_equals_sinet_eval_to_the_last_digit(prid, tmp_path, capsys):
    out = tmp_path / 'r.json'
    assert eval_main(['--model', 'vreid_r50', '--no-pretrained', '--seed', '3', '--dataset', 'prid', '--root',
                      str(prid), '--mode', 'sampled', '--no-cache', '--workers', '0', '--no-progress', '--device',
                      'cpu', '--output', str(out)]) == 0
    cli = json.loads(out.read_text())
    res = reid_eval.evaluate('vreid_r50', 'prid', prid, pretrained=False, seed=3, **QUIET)
    api = res.to_json()
    assert api['metrics'] == cli['metrics']
    assert set(api['metrics']) == {'mAP', 'rank1', 'rank5', 'rank10', 'rank20', 'mINP'}
    assert [s['metrics'] for s in api['per_split']] == [s['metrics'] for s in cli['per_split']]  # cmc included
    for k in ('model', 'weights', 'weights_sha256', 'architecture', 'input', 'dataset', 'root', 'protocol', 'paper'):
        assert api[k] == cli[k], k
    assert res.random_weights and res.weights == 'vreid_r50 (random init)' and res.input == 'clips'
    nq = res.per_split[0].num_query
    assert res.query.features.shape == (nq, 2048) and len(res.gallery) == res.per_split[0].num_gallery
    assert res.query.names[0].startswith('prid_2011/multi_shot/cam_a/person_')  # relative to the dataset folder
    # rank() of the returned embeddings is the reported ranking
    assert reid_eval.rank(res.query, res.gallery)['mAP'] == res.metrics['mAP']


def test_any_module_mapping_clips_to_embeddings(prid):
    """A module of one's own: the metrics are those of a hand-rolled pipeline (same clips, same preprocessing,
    plain ranking); its preprocessing is the family's 256x128 re-ID one, or what the caller asks for."""
    torch.manual_seed(0)
    model = TinyVideoNet().eval()
    res = reid_eval.evaluate(model, 'prid2011', prid, **QUIET)
    assert res.input == 'clips' and res.weights == 'TinyVideoNet module (weights as given)'
    assert res.model == 'TinyVideoNet' and res.architecture is None
    cfg = timm.data.resolve_data_config({}, pretrained_cfg=timm.get_pretrained_cfg('vreid_r50').to_dict())
    assert cfg['input_size'] == (3, 256, 128)
    feats, pids, cams = _by_hand(model, prid, timm.data.create_transform(**cfg))
    nq = res.per_split[0].num_query
    torch.testing.assert_close(torch.cat([res.query.features, res.gallery.features]), feats, rtol=1e-5, atol=1e-5)
    pids, cams = np.array(pids), np.array(cams)
    plain = _plain_metrics(feats[:nq], feats[nq:], pids[:nq], cams[:nq], pids[nq:], cams[nq:])
    assert res.metrics['mAP'] == pytest.approx(plain['mAP']) and res.metrics['rank1'] == pytest.approx(plain['rank1'])
    # the caller's preprocessing wins
    small = reid_eval.evaluate(model, 'prid2011', prid, data_config={'input_size': (3, 64, 32)}, **QUIET)
    feats64, _, _ = _by_hand(model, prid, timm.data.create_transform(**dict(cfg, input_size=(3, 64, 32))))
    torch.testing.assert_close(small.query.features, feats64[:nq], rtol=1e-5, atol=1e-5)


def test_timm_image_model_is_evaluated_frame_by_frame(prid, tmp_path, capsys):
    """A timm image model (module or name): each frame embedded with the model's own preprocessing, the frame
    embeddings averaged over each clip; every output says so."""
    torch.manual_seed(0)
    resnet = timm.create_model('resnet18', num_classes=0).eval()
    res = reid_eval.evaluate(resnet, 'prid2011', prid, **QUIET)
    assert res.input == 'frames' and 'image model: frame embeddings averaged over each clip' in res.protocol
    cfg = timm.data.resolve_data_config({}, model=resnet)
    assert cfg['input_size'] == (3, 224, 224)  # the model's pretrained cfg, not the re-ID default

    def per_frame_mean(x: torch.Tensor) -> torch.Tensor:
        return resnet(x.flatten(0, 1)).unflatten(0, x.shape[:2]).mean(1)

    feats, _, _ = _by_hand(per_frame_mean, prid, timm.data.create_transform(**cfg))
    torch.testing.assert_close(torch.cat([res.query.features, res.gallery.features]), feats, rtol=1e-4, atol=1e-4)
    # by name, random weights drawn with the same seed: the same numbers
    by_name = reid_eval.evaluate('resnet18', 'prid2011', prid, pretrained=False, seed=0, **QUIET)
    assert by_name.metrics == res.metrics and by_name.weights == 'resnet18 (random init)'
    # the command: no conv2d traceback, a labelled result
    out = tmp_path / 'r.json'
    assert eval_main(['--model', 'resnet18', '--no-pretrained', '--dataset', 'prid2011', '--root', str(prid),
                      '--mode', 'sampled', '--no-cache', '--workers', '0', '--no-progress', '--output', str(out)]) == 0
    assert 'image model: frame embeddings averaged over each clip' in capsys.readouterr().out
    assert json.loads(out.read_text())['input'] == 'frames'


@pytest.mark.slow  # 13-20 s in CI: out of the default run (under 5 minutes)
def test_zoo_name_from_a_laid_out_hub_cache(prid, tmp_path):
    """reid_eval.evaluate('sinet_r50.mars') loads through timm's Hub cache (laid out here, offline) and gives the
    numbers of the same weights evaluated as a module."""
    torch.manual_seed(0)
    src = timm.create_model('sinet_r50', num_classes=625).eval()
    save_for_hf(src, str(tmp_path / 'export'), safe_serialization=True)
    cache = tmp_path / 'hub'
    layout_hub_cache(cache, timm.get_pretrained_cfg('sinet_r50.mars').hf_hub_id, folder_bytes(tmp_path / 'export'))
    out = tmp_path / 'zoo.json'
    code = textwrap.dedent(f"""
        import json, reid_eval
        res = reid_eval.evaluate('sinet_r50.mars', 'prid2011', {str(prid)!r}, **{QUIET!r})
        open({str(out)!r}, 'w').write(json.dumps(res.to_json()))
    """)
    r = run_offline(code, cache)
    assert r.returncode == 0, r.stderr[-3000:]
    zoo = json.loads(out.read_text())
    src.reset_classifier(0)
    direct = reid_eval.evaluate(src, 'prid2011', prid, **QUIET)
    assert zoo['metrics'] == direct.metrics and zoo['weights'] == 'sinet_r50.mars' and zoo['input'] == 'clips'
    assert zoo['weights_sha256'] == direct.weights_sha256
    assert zoo['paper'] == {'rank1': 96.5}  # SINet on PRID-2011, paper Table 1 (from the dataset's spec)


def test_extract_embeds_own_tracklets_and_options_are_checked(prid):
    data = load_dataset('prid2011', prid)
    tracklets = [paths for paths, _, _ in data.query[:3]]
    torch.manual_seed(0)
    model = TinyVideoNet().eval()
    feats = reid_eval.extract(model, tracklets, device='cpu', workers=0, progress=False)
    assert feats.shape == (3, 16) and torch.isfinite(feats).all()
    res = reid_eval.evaluate(model, 'prid2011', prid, **dict(QUIET, mode='dense'))
    torch.testing.assert_close(feats, res.query.features[:3], rtol=1e-5, atol=1e-6)  # same protocol, same numbers
    for bad, message in (({'batch_clips': 0}, '--batch-clips must be'), ({'workers': -1}, '--workers must be'),
                         ({'amp': 'fp8'}, '--amp must be'), ({'mode': 'all'}, '--mode must be')):
        with pytest.raises(reid_eval.EvalError, match=message):
            reid_eval.extract(model, tracklets, **bad)
    with pytest.raises(reid_eval.EvalError, match='--root is needed for mars'):
        reid_eval.evaluate(model, 'mars')
    with pytest.raises(reid_eval.EvalError, match="unknown model 'resnet9000'"):
        reid_eval.evaluate('resnet9000', 'prid2011', prid)


def _project_modules():
    for pkg_name in ('sinet_timm', 'reid_eval', 'sinet_train', 'sinet_cli'):
        pkg = importlib.import_module(pkg_name)
        yield pkg
        for info in pkgutil.walk_packages(pkg.__path__, pkg_name + '.'):
            if not info.name.endswith('__main__'):
                yield importlib.import_module(info.name)


def test_one_error_hierarchy():
    """Every exception class the project defines derives from SinetTimmError (what the commands print as one line
    and exit 2 for); there is one of each."""
    found = {}
    for module in _project_modules():
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and not issubclass(obj, Warning) \
                    and obj.__module__ == module.__name__:
                found[f'{module.__name__}.{name}'] = obj
    assert len(found) >= 15
    stray = [n for n, cls in found.items() if not issubclass(cls, SinetTimmError)]
    assert stray == []
    names = [n.rsplit('.', 1)[1] for n in found]
    assert len(names) == len(set(names)), sorted(names)


def test_commands_parse_before_importing_torch():
    """--help answers without importing torch (it takes seconds), and the choices the parsers repeat equal the
    library's."""
    code = textwrap.dedent("""
        import sys
        from sinet_cli import convert, eval, export, extract, hub, search, synthetic, train, viz
        for m in (convert, eval, export, extract, hub, search, synthetic, train, viz):
            m.build_parser().format_help()
        try:
            eval.main(['--help'])
        except SystemExit as e:
            assert e.code == 0
        print('TORCH', 'torch' in sys.modules)
    """)
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=child_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert 'TORCH False' in r.stdout and 'usage: sinet-eval' in r.stdout
    from reid_eval.evaluator import CAMERA_FALLBACKS
    from reid_eval.extraction import AMP_CHOICES
    from reid_eval.protocol import MODES
    from reid_eval.ranking import RANKERS
    from sinet_cli import _common, convert, eval, train
    from sinet_cli import hub as hub_cmd
    from sinet_timm.archs import ARCHITECTURES, RELEASED_NAMES
    from sinet_timm.hub import DEFAULT_TOLERANCE
    from sinet_train import TrainConfig

    assert (_common.AMP_CHOICES, _common.MODES, _common.RANKERS) == (AMP_CHOICES, MODES, RANKERS)
    assert (None, *_common.CAMERA_FALLBACKS) == CAMERA_FALLBACKS
    assert set(convert.ARCHS) == set(ARCHITECTURES) | set(RELEASED_NAMES)
    assert hub_cmd.DEFAULT_TOLERANCE == DEFAULT_TOLERANCE
    assert all(s.name in eval.DATASETS_HELP for s in SPECS)
    defaults = TrainConfig()
    for k, v in train.DEFAULTS.items():
        assert getattr(defaults, k) == v, k
