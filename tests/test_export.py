"""sinet-export: ONNX through torch's current exporter, dynamic batch, checked in onnxruntime against PyTorch."""
from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime
import pytest
import timm
import torch
from timm.models import save_for_hf

from sinet_cli.export import main
from sinet_timm.export import export_onnx


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    """An SBNet (SBM: the module with the most arithmetic of its own) on 128x64 frames, as a Hub-ready folder."""
    torch.manual_seed(0)
    m = timm.create_model('sbnet_r50', img_size=(128, 64))
    out = tmp_path_factory.mktemp('export') / 'sbnet'
    save_for_hf(m, str(out), model_args={'img_size': [128, 64]}, safe_serialization=True)
    return out


def _dims(path) -> list:
    shape = onnx.load(str(path)).graph.input[0].type.tensor_type.shape
    return [d.dim_param or d.dim_value for d in shape.dim]


@pytest.mark.slow
@pytest.mark.parametrize('image', [False, True])
@pytest.mark.heavy  # 30-140 s in CI: out of .ci/run (under 30 minutes), run by hand with -m heavy
def test_export_is_checked_and_has_a_dynamic_batch(folder, tmp_path, capsys, image):
    out = tmp_path / 'm.onnx'
    assert main(['--model', str(folder), '--output', str(out), *(['--image'] if image else [])]) == 0
    printed = capsys.readouterr().out
    assert 'onnxruntime matches PyTorch on a batch of 3' in printed and 'of the embedding scale' in printed
    assert list(out.parent.iterdir()) == [out]  # one self-contained file, no external weights
    dims = _dims(out)
    assert dims[1:] == ([3, 128, 64] if image else [4, 3, 128, 64]) and isinstance(dims[0], str)  # batch: dynamic
    model = timm.create_model(f'local-dir:{folder}', pretrained=True, num_classes=0).eval()
    x = torch.randn(5, 3, 128, 64) if image else torch.randn(5, 4, 3, 128, 64)
    got = onnxruntime.InferenceSession(str(out)).run(None, {'images' if image else 'clips': x.numpy()})[0]
    with torch.no_grad():
        ref = model(x)
    assert (torch.from_numpy(got) - ref).abs().max() <= 1e-4 * ref.abs().max()


@pytest.mark.slow
def test_eight_frame_clips_and_bad_requests(folder, tmp_path, capsys):
    model = timm.create_model(f'local-dir:{folder}', pretrained=True, num_classes=0)
    report = export_onnx(model, tmp_path / 'm8.onnx', frames=8, batch=1)
    assert report.ok and report.input_shape == ('batch', 8, 3, 128, 64)
    assert main(['--model', str(folder), '--output', str(tmp_path / 'x.onnx'), '--frames', '6']) == 2
    assert '--frames must be a positive multiple of 4' in capsys.readouterr().err
    (tmp_path / 'mine.onnx').write_bytes(b'keep')
    assert main(['--model', str(folder), '--output', str(tmp_path / 'mine.onnx')]) == 2
    assert '--overwrite' in capsys.readouterr().err and (tmp_path / 'mine.onnx').read_bytes() == b'keep'
    assert main(['--model', 'resnet9000', '--output', str(tmp_path / 'y.onnx')]) == 2
    assert 'Unknown model' in capsys.readouterr().err


@pytest.mark.parametrize('args,message', [
    (['--opset', '1'], "error: --opset 1: torch's exporter writes opsets 18 to"),
    (['--opset', '99999'], "error: --opset 99999: torch's exporter writes opsets 18 to"),
    (['--batch', '-5'], 'error: --batch must be a whole number from 1 to 64, got -5'),
    (['--batch', '100000'], 'error: --batch must be a whole number from 1 to 64, got 100000'),
    (['--frames', '0'], 'error: --frames must be a positive multiple of 4 (the clip length), got 0'),
    pytest.param(['--frames', '400000'], 'error: exporting 400000 frames per clip needs about',
                 marks=pytest.mark.skipif(not Path('/proc/meminfo').exists(), reason='reads MemAvailable')),
])
def test_requests_that_cannot_be_honoured_are_one_line(folder, tmp_path, capsys, args, message):
    """An opset the exporter does not write (it wrote 18 and exited 0), a nonsense example batch, a clip too long
    for the memory the check needs (onnxruntime ran out of memory): one line, exit 2, no file, no export run."""
    out = tmp_path / 'x.onnx'
    assert main(['--model', str(folder), '--output', str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count('\n') == 1, err
    assert not out.exists()
