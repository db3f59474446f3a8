"""Evaluating exported ONNX files (issue 29): the file runs in onnxruntime through the same protocol, cache and
ranking as its PyTorch model, its preprocessing read from its metadata; INT8 copies; camera ids as a second input.

The fast tests build small ONNX graphs by hand (onnx.helper) beside the PyTorch module computing the same thing;
the tests that run torch's exporter are slow."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import timm
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper
from timm.models import save_for_hf

import reid_eval
from reid_eval.errors import EvalError
from reid_eval.models import load_model
from reid_eval.onnx_model import OnnxModel
from reid_eval.synthetic import make_synthetic
from sinet_cli.eval import main as eval_main
from sinet_cli.export import _int8_name
from sinet_cli.export import main as export_main
from sinet_timm.errors import ModelInputError
from sinet_timm.export import METADATA_FORMAT, export_onnx, int8_path, quantize_onnx, read_metadata, weights_sha256

H, W, T, D = 16, 8, 4, 8


class Tiny(nn.Module):
    """``tanh(mean over frames and columns, flattened @ weight) (+ camera row)``: what :func:`tiny_onnx` computes."""

    def __init__(self, seed: int = 0, cameras: int | None = None, protocol: str = 'dense'):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(3 * H, D, generator=g))
        self.cam = nn.Parameter(torch.randn(cameras or 1, D, generator=g))
        self.pretrained_cfg = dict(architecture='tiny', input_size=(3, H, W), interpolation='bilinear',
                                   mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), crop_pct=1.0, protocol=protocol,
                                   camera_input=cameras is not None, num_cameras=cameras)
        self.clip_len = T

    def forward(self, x: torch.Tensor, camids: torch.Tensor | None = None) -> torch.Tensor:
        emb = torch.tanh(x.mean(dim=(1, 4)).flatten(1) @ self.weight)
        return emb + self.cam[camids] if camids is not None else emb


def metadata(model: Tiny, graph: str = 'clips', **extra) -> dict[str, str]:
    cfg = model.pretrained_cfg
    values = dict(format=METADATA_FORMAT, model='tiny', architecture='tiny', graph=graph,
                  input_size=list(cfg['input_size']), clip_len=T, mean=list(cfg['mean']), std=list(cfg['std']),
                  interpolation=cfg['interpolation'], crop_pct=1.0, crop_mode='squash', protocol=cfg['protocol'],
                  camera_input=cfg['camera_input'], num_cameras=cfg['num_cameras'], embedding_dim=D,
                  distance='cosine', weights_sha256='0' * 64, **extra)
    return {k: json.dumps(v) for k, v in values.items()}


def tiny_onnx(path: Path, model: Tiny, *, batch: int | str = 'batch', graph: str = 'clips',
              meta: dict[str, str] | None = None) -> Path:
    """The ONNX graph of ``model`` (opset 17), with ``batch`` a fixed size or a named dynamic axis."""
    cams = model.pretrained_cfg['camera_input']
    shape = [batch, T, 3, H, W] if graph == 'clips' else [batch, 3, H, W]
    axes = [1, 4] if graph == 'clips' else [3]
    inputs = [helper.make_tensor_value_info('clips' if graph == 'clips' else 'images', TensorProto.FLOAT, shape)]
    nodes = [helper.make_node('ReduceMean', [inputs[0].name], ['m'], axes=axes, keepdims=0),
             helper.make_node('Flatten', ['m'], ['f'], axis=1),
             helper.make_node('MatMul', ['f', 'weight'], ['p']),
             helper.make_node('Tanh', ['p'], ['embedding' if not cams else 'e'])]
    inits = [numpy_helper.from_array(model.weight.detach().numpy(), 'weight')]
    if cams:
        inputs.append(helper.make_tensor_value_info('camids', TensorProto.INT64, [batch]))
        nodes += [helper.make_node('Gather', ['cam', 'camids'], ['c'], axis=0),
                  helper.make_node('Add', ['e', 'c'], ['embedding'])]
        inits.append(numpy_helper.from_array(model.cam.detach().numpy(), 'cam'))
    out = helper.make_tensor_value_info('embedding', TensorProto.FLOAT, [batch, D])
    m = helper.make_model(helper.make_graph(nodes, 'tiny', inputs, [out], inits),
                          opset_imports=[helper.make_opsetid('', 17)], ir_version=9)
    for k, v in (metadata(model, graph) if meta is None else meta).items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))
    return path


@pytest.fixture(scope='module')
def prid(tmp_path_factory) -> Path:
    return make_synthetic('prid2011', tmp_path_factory.mktemp('onnx') / 'data', num_ids=6, lengths=(1, 2, 3))


def _eval(model, root: Path, cache_dir: Path | None = None, **kw):
    return reid_eval.evaluate(model, 'prid2011', root, workers=0, progress=False, device='cpu',
                              cache=cache_dir is not None, cache_dir=cache_dir, **kw)


def test_an_onnx_file_scores_what_its_torch_module_scores_and_is_cached_by_its_bytes(prid, tmp_path):
    torch_model = Tiny(seed=0)
    path = tiny_onnx(tmp_path / 'tiny.onnx', torch_model)
    ref = _eval(torch_model, prid)
    cache = tmp_path / 'cache'
    got = _eval(str(path), prid, cache)
    assert abs(got.metrics['mAP'] - ref.metrics['mAP']) < 1e-4 and got.metrics['rank1'] == ref.metrics['rank1']
    assert torch.allclose(got.query.features, ref.query.features, atol=1e-5)
    assert got.mode == 'dense' and got.architecture == 'tiny' and got.input == 'clips'
    assert re.fullmatch(rf'onnx:{re.escape(str(path.resolve()))} \(onnxruntime [\d.]+, CPUExecutionProvider\)',
                        got.weights)
    assert got.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert got.per_split[0].cache['computed_shards'] >= 1
    again = _eval(str(path), prid, cache)  # the same bytes: every shard from the cache
    assert again.per_split[0].cache['computed_shards'] == 0 and again.metrics == got.metrics
    tiny_onnx(path, Tiny(seed=1))  # other weights in the same file name: another cache entry
    other = _eval(str(path), prid, cache)
    assert other.per_split[0].cache['computed_shards'] >= 1
    assert other.per_split[0].cache['folder'] != got.per_split[0].cache['folder']
    assert not torch.allclose(other.query.features, got.query.features)


def test_preprocessing_and_protocol_come_from_the_metadata(tmp_path):
    path = tiny_onnx(tmp_path / 'vkd.onnx', Tiny(protocol='vkd'))
    loaded = load_model(path)
    assert isinstance(loaded.module, OnnxModel) and loaded.clip_len == T
    cfg = loaded.data_config
    assert cfg['input_size'] == (3, H, W) and cfg['mean'] == (0.5, 0.4, 0.3) and cfg['interpolation'] == 'bilinear'
    assert reid_eval.EvalOptions().resolved(loaded.module).mode == 'vkd'
    assert loaded.module.state_dict() == {} and loaded.module.cache_key.startswith('onnx:')


def test_camera_ids_and_a_fixed_batch(prid, tmp_path):
    """A file with a camera input and a fixed batch of 3: batches of 4 clips are split and padded; the camera ids
    of the tracklets reach the graph."""
    torch_model = Tiny(seed=2, cameras=2)
    path = tiny_onnx(tmp_path / 'cams.onnx', torch_model, batch=3)
    ref = _eval(torch_model, prid)
    got = _eval(path, prid, batch_clips=4)
    assert abs(got.metrics['mAP'] - ref.metrics['mAP']) < 1e-4
    assert torch.allclose(got.gallery.features, ref.gallery.features, atol=1e-5)
    m = OnnxModel(path)
    x = torch.randn(5, T, 3, H, W)
    cams = torch.tensor([0, 1, 1, 0, 1])
    assert torch.allclose(m(x, camids=cams), torch_model(x, camids=cams), atol=1e-5)
    with pytest.raises(ModelInputError, match=r"takes camera ids \(input 'camids'"):
        m(x)
    with pytest.raises(ModelInputError, match='mean-camera fallback'):
        _eval(path, prid, camera_fallback='mean')


def test_a_single_crop_file_embeds_every_frame_and_averages(prid, tmp_path):
    torch_model = Tiny(seed=3)
    path = tiny_onnx(tmp_path / 'crops.onnx', torch_model, graph='image')
    m = OnnxModel(path)
    x = torch.randn(2, 3, 3, H, W)
    per_frame = torch.stack([torch_model(x[:, t:t + 1]) for t in range(3)], 1).mean(1)
    assert torch.allclose(m(x), per_frame, atol=1e-5)
    res = _eval(path, prid)
    assert res.input == 'frames' and 'frame embeddings averaged' in res.per_split[0].protocol


def test_files_that_cannot_be_evaluated_are_one_line(tmp_path, prid, capsys):
    with pytest.raises(EvalError, match=r'no such ONNX file; write one with sinet-export'):
        load_model(tmp_path / 'missing.onnx')
    (tmp_path / 'junk.onnx').write_bytes(b'not a protobuf')
    with pytest.raises(EvalError, match=r'junk.onnx is not an ONNX file onnxruntime .* can run .*sinet-export'):
        load_model(tmp_path / 'junk.onnx')
    bare = tiny_onnx(tmp_path / 'bare.onnx', Tiny(), meta={})
    with pytest.raises(EvalError, match=r'has no sinet-timm metadata .*export it again with sinet-export'):
        load_model(bare)
    partial = tiny_onnx(tmp_path / 'partial.onnx', Tiny(),
                        meta={k: v for k, v in metadata(Tiny()).items() if k not in ('mean', 'clip_len')})
    with pytest.raises(EvalError, match=r'lacks the metadata clip_len, mean; export it again'):
        load_model(partial)
    m = OnnxModel(tiny_onnx(tmp_path / 'ok.onnx', Tiny()))
    with pytest.raises(ModelInputError, match=r'takes clips of 4 frames \(fixed at export\), got 8-frame clips.*'
                                              '--frames 8'):
        m(torch.randn(1, 8, 3, H, W))
    with pytest.raises(ModelInputError, match=r'takes 3x16x8 frames'):
        m(torch.randn(1, T, 3, 32, 16))
    with pytest.raises(EvalError, match='drop --compile'):
        _eval(tmp_path / 'ok.onnx', prid, compile='inductor')
    assert eval_main(['--model', str(tmp_path / 'junk.onnx'), '--dataset', 'prid2011', '--root', str(prid),
                      '--workers', '0', '--no-cache', '--no-progress', '--output', str(tmp_path / 'r.json')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and 'sinet-export' in err[0]


def test_sinet_eval_names_the_runtime_that_scored_the_file(prid, tmp_path, capsys):
    path = tiny_onnx(tmp_path / 'tiny.onnx', Tiny())
    out = tmp_path / 'r.json'
    assert eval_main(['--model', str(path), '--dataset', 'prid2011', '--root', str(prid), '--workers', '0',
                      '--no-cache', '--no-progress', '--output', str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r'^  runtime: onnx:.*tiny\.onnx \(onnxruntime [\d.]+, CPUExecutionProvider\)$', printed, re.M)
    summary = json.loads(out.read_text())
    assert summary['weights'].startswith('onnx:') and summary['architecture'] == 'tiny'
    assert summary['weights_sha256'] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_int8_copies_keep_the_metadata_and_are_evaluated(prid, tmp_path):
    torch_model = Tiny(seed=4)
    path = tiny_onnx(tmp_path / 'm.onnx', torch_model)
    dyn = quantize_onnx(path)
    assert dyn == int8_path(path) == _int8_name(path) == tmp_path / 'm.int8.onnx'
    meta = read_metadata(dyn)
    assert json.loads(meta['quantization']).startswith('int8 dynamic')
    assert json.loads(meta['quantized_from']) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta['input_size'] == metadata(torch_model)['input_size']
    with pytest.raises(FileExistsError, match='--overwrite'):
        quantize_onnx(path)
    rng = np.random.default_rng(0)
    feeds = [{'clips': rng.standard_normal((2, T, 3, H, W)).astype(np.float32)} for _ in range(3)]
    static = quantize_onnx(path, tmp_path / 's.int8.onnx', calibration=feeds, calibration_note='random')
    assert 'static: QDQ' in json.loads(read_metadata(static)['quantization']) and '6 calibration clips (random)' in \
        json.loads(read_metadata(static)['quantization'])
    assert any(n.op_type == 'QuantizeLinear' for n in onnx.load(str(static)).graph.node)
    ref = _eval(path, prid)
    for q in (dyn, static):
        res = _eval(q, prid)
        assert res.weights.endswith(', int8)') and abs(res.metrics['mAP'] - ref.metrics['mAP']) < 25
        x = torch.from_numpy(feeds[0]['clips'])
        cos = nn.functional.cosine_similarity(OnnxModel(q)(x), torch_model(x).detach())
        assert bool((cos > 0.95).all())


def test_int8_options_that_do_not_fit_are_one_line_before_anything_runs(tmp_path, capsys):
    out = tmp_path / 'm.onnx'
    base = ['--model', 'vreid_r50', '--no-pretrained', '--output', str(out)]
    for extra, message in (
            (['--calibrate', 'prid2011'], '--calibrate is an option of the INT8 copy: add --int8'),
            (['--int8', '--root', str(tmp_path)],
             '--root is the folder of the --calibrate dataset: add --calibrate DATASET'),
            (['--int8', '--calibrate', 'mars'],
             '--calibrate mars needs --root: the folder that holds the dataset folder'),
            (['--int8', '--calibration-clips', '0'], '--calibration-clips must be a positive number of clips, got 0')):
        assert export_main(base + extra) == 2
        assert capsys.readouterr().err.strip() == f'error: {message}'
    int8_path(out).write_bytes(b'keep')
    assert export_main(base + ['--int8']) == 2
    assert 'm.int8.onnx exists; pass --overwrite' in capsys.readouterr().err
    assert int8_path(out).read_bytes() == b'keep' and not out.exists()


class CamNet(nn.Module):
    """A clip model of another family that takes camera ids, with what the export reads (img_size, clip_len...)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.img_size, self.in_chans, self.clip_len, self.num_features, self.num_classes = (32, 16), 3, 4, D, 0
        self.conv = nn.Conv2d(3, D, 3, padding=1)
        self.cam = nn.Parameter(torch.randn(2, D))
        self.pretrained_cfg = dict(architecture='camnet', tag='test', input_size=(3, 32, 16), mean=(0.5, 0.5, 0.5),
                                   std=(0.25, 0.25, 0.25), interpolation='bilinear', crop_pct=1.0,
                                   protocol='dense', camera_input=True, num_cameras=2)

    def forward(self, x: torch.Tensor, camids: torch.Tensor | None = None) -> torch.Tensor:
        b, t = x.shape[:2]
        f = torch.relu(self.conv(x.flatten(0, 1))).amax(dim=(2, 3)).unflatten(0, (b, t)).mean(1)
        return f + self.cam[camids]


@pytest.mark.slow
def test_export_writes_the_metadata_and_a_camera_input(prid, tmp_path):
    model = CamNet().eval()
    report = export_onnx(model, tmp_path / 'cam.onnx')
    assert report.ok and report.camera_input
    assert [i.name for i in onnx.load(str(report.path)).graph.input] == ['clips', 'camids']
    meta = {k: json.loads(v) for k, v in read_metadata(report.path).items()}
    assert meta == {**meta, 'format': METADATA_FORMAT, 'model': 'camnet.test', 'graph': 'clips',
                    'inputs': ['clips', 'camids'], 'input_size': [3, 32, 16], 'clip_len': 4, 'mean': [0.5] * 3,
                    'std': [0.25] * 3, 'interpolation': 'bilinear', 'protocol': 'dense', 'camera_input': True,
                    'num_cameras': 2, 'embedding_dim': D, 'weights_sha256': weights_sha256(model)}
    assert meta['producer'].startswith('sinet-timm ') and report.metadata == read_metadata(report.path)
    ref, got = _eval(model, prid), _eval(report.path, prid)
    assert abs(got.metrics['mAP'] - ref.metrics['mAP']) < 1e-4 and got.metrics['rank1'] == ref.metrics['rank1']


@pytest.mark.slow
def test_sinet_export_int8_calibrates_on_a_dataset_and_reports(prid, tmp_path, capsys):
    torch.manual_seed(0)
    folder = tmp_path / 'vreid'
    save_for_hf(timm.create_model('vreid_r50', img_size=(64, 32)), str(folder), model_args={'img_size': [64, 32]},
                safe_serialization=True)
    out = tmp_path / 'v.onnx'
    assert export_main(['--model', str(folder), '--output', str(out), '--int8', '--calibrate', 'prid2011',
                        '--root', str(prid), '--calibration-clips', '6']) == 0
    printed = capsys.readouterr().out
    assert re.search(r'^wrote .*v\.int8\.onnx: int8 \(static, 6 calibration clips from prid2011 split 0 train '
                     r'tracklets, dense clips\)$', printed, re.M), printed
    line = re.search(r'^int8 vs fp32 on prid2011 \(dense\): mAP ([\d.]+) -> ([\d.]+) \([+-][\d.]+\), R1 [\d.]+ -> '
                     r'[\d.]+ \([+-][\d.]+\); size ([\d.]+) -> ([\d.]+) MB; CPU ([\d.]+) -> ([\d.]+) clips/s '
                     r'\([\d.]+x, batch 4\)$', printed, re.M)
    assert line, printed
    assert float(line.group(4)) < float(line.group(3)) / 3  # int8 weights: about a quarter of the bytes
    fp32 = _eval(out, prid)
    assert abs(fp32.metrics['mAP'] - float(line.group(1))) < 0.051  # the report scored the file as sinet-eval does
    assert json.loads(read_metadata(int8_path(out))['input_size']) == [3, 64, 32]
