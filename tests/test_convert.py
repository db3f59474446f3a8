"""Released checkpoints -> our models: same embeddings as the released computation, and clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from released_reference import make_released_state_dict, released_forward, save_released_checkpoint

from sinet_cli.convert import main
from sinet_timm import checkpoint_filter_fn
from sinet_timm.convert import CheckpointError, convert, load_released

ARCHS = {'sinet': 'sinet_r50', 'sbnet': 'sbnet_r50', 'idnet': 'idnet_r50', 'resnet50': 'vreid_r50',
         'sanet': 'sanet_r50'}


@pytest.fixture(scope='module')
def clips() -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.randn(2, 4, 3, 256, 128, generator=g)  # (B, T, C, H, W)


@pytest.mark.parametrize('released_arch', list(ARCHS))
def test_converted_checkpoint_matches_released_computation(released_arch, clips, tmp_path):
    src = tmp_path / 'checkpoint_ep150.pth.tar'
    sd = save_released_checkpoint(src, released_arch, seed=7)
    out = tmp_path / 'hub'
    assert main([str(src), str(out), '--arch', ARCHS[released_arch], '--dataset', 'mars']) == 0
    assert {p.name for p in out.iterdir()} == {'model.safetensors', 'config.json'}
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['architecture'] == ARCHS[released_arch] and cfg['num_classes'] == 625
    assert cfg['reid']['frames_per_clip'] == 4 and cfg['reid']['dataset'] == 'mars'
    assert len(cfg['source']['sha256']) == 64

    model = timm.create_model(f'local-dir:{out}', pretrained=True, num_classes=0).eval()
    with torch.no_grad():
        ours = model(clips)
        ref = released_forward(sd, clips.transpose(1, 2), released_arch).mean(-1)  # (B, C, T) -> (B, C)
        ours_cl = model.to(memory_format=torch.channels_last)(clips)  # the fast CPU/GPU layout
    assert (ours - ref).abs().max().item() <= 1e-4
    assert (ours_cl - ref).abs().max().item() <= 1e-4
    # the classifier and the frame projection come along for fine-tuning
    full = timm.create_model(f'local-dir:{out}', pretrained=True)
    torch.testing.assert_close(full.classifier.weight, sd['classifier.weight'])
    if released_arch in ('sinet', 'sbnet'):
        torch.testing.assert_close(full.projection.weight, sd['projection.weight'])
    else:  # trained without the frame loss (SANet: cross-entropy and triplet only)
        assert full.projection is None


def test_eight_frame_clips_match_released_sbm(tmp_path):
    """The released SBM treats T=8 as two 4-frame groups; so do we (for any multiple of 4)."""
    sd = make_released_state_dict('sbnet', seed=3)
    model = timm.create_model('sbnet_r50', num_classes=625)
    model.load_state_dict(checkpoint_filter_fn(sd, model))
    x = torch.randn(1, 8, 3, 256, 128, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours = model.eval().forward_head(model.forward_features(x), pre_logits=True)
        ref = released_forward(sd, x.transpose(1, 2), 'sbnet').mean(-1)
    assert (ours - ref).abs().max().item() <= 1e-4


@pytest.mark.slow  # 13-20 s in CI: out of the default run (under 5 minutes)
def test_eight_frame_clips_match_released_sanet():
    """SA pools its statistics over the clip it is given. The released evaluation only feeds 4-frame clips, so an
    8-frame input is two 4-frame clips, whose embeddings are averaged; clip_len=8 pools over all 8 frames, as the
    released forward does when handed one 8-frame clip. Both equal the released computation."""
    sd = make_released_state_dict('sanet', seed=4)
    x = torch.randn(1, 8, 3, 256, 128, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        halves = [released_forward(sd, x[:, i:i + 4].transpose(1, 2), 'sanet').mean(-1) for i in (0, 4)]
        whole = released_forward(sd, x.transpose(1, 2), 'sanet').mean(-1)
        for clip_len, ref in ((4, (halves[0] + halves[1]) / 2), (8, whole)):
            model = timm.create_model('sanet_r50', num_classes=625, clip_len=clip_len)
            model.load_state_dict(checkpoint_filter_fn(sd, model))
            model.eval()
            assert (model.forward_head(model.forward_features(x), pre_logits=True) - ref).abs().max().item() <= 1e-4
    assert (whole - (halves[0] + halves[1]) / 2).abs().max().item() > 1e-4  # the two readings differ


@pytest.mark.slow  # 13-20 s in CI: out of the default run (under 5 minutes)
def test_sanet_through_timm_overlay_and_a_sinet_file_offered_as_sanet(tmp_path, clips, capsys):
    """The released SANet file (with its NumPy rank1) loads through pretrained_cfg_overlay; a SINet file offered
    as SANet is refused everywhere with the architecture it looks like."""
    src = tmp_path / 'sanet.pth.tar'
    sd = save_released_checkpoint(src, 'sanet', seed=2)
    assert type(torch.load(src, weights_only=False)['rank1']).__module__ == 'numpy'  # as released main.py saves it
    assert load_released(src).pretrained_cfg['architecture'] == 'sanet_r50'  # inferred from the keys
    m = timm.create_model('sanet_r50', pretrained=True, num_classes=0,
                          pretrained_cfg_overlay=dict(file=str(src))).eval()
    with torch.no_grad():
        ref = released_forward(sd, clips.transpose(1, 2), 'sanet').mean(-1)
        assert (m(clips) - ref).abs().max().item() <= 1e-4

    sinet = tmp_path / 'sinet.pth.tar'
    save_released_checkpoint(sinet, 'sinet', seed=0)
    with pytest.raises(CheckpointError, match=r'does not match sanet_r50\. The checkpoint looks like sinet_r50\.'):
        load_released(sinet, 'sanet_r50')
    with pytest.raises(CheckpointError, match=r'does not fit sanet_r50\. It looks like sinet_r50\.') as e:
        timm.create_model('sanet_r50', pretrained=True, pretrained_cfg_overlay=dict(file=str(sinet)))
    assert 'layer2.2.reduce.weight' in str(e.value)  # SA keys missing from the checkpoint
    assert main([str(sinet), str(tmp_path / 'out'), '--arch', 'sanet']) == 2
    assert 'looks like sinet_r50' in capsys.readouterr().err
    with pytest.raises(CheckpointError, match=r'does not match sinet_r50\. The checkpoint looks like sanet_r50\.'):
        load_released(src, 'sinet_r50')


def test_direct_load_through_timm_pretrained_overlay(tmp_path, clips):
    """timm's own `file=` overlay accepts the authors' .pth.tar through checkpoint_filter_fn."""
    src = tmp_path / 'idnet.pth.tar'
    sd = save_released_checkpoint(src, 'idnet', seed=1)
    m = timm.create_model('idnet_r50', pretrained=True, num_classes=0,
                          pretrained_cfg_overlay=dict(file=str(src))).eval()
    with torch.no_grad():
        ref = released_forward(sd, clips.transpose(1, 2), 'idnet').mean(-1)
        assert (m(clips) - ref).abs().max().item() <= 1e-4


def test_arch_inferred_and_module_prefix(tmp_path):
    sd = make_released_state_dict('sbnet', num_classes=11, seed=2)
    path = tmp_path / 'dp.pth.tar'
    torch.save({'state_dict': {f'module.{k}': v for k, v in sd.items()}, 'epoch': 3}, path)  # DataParallel
    m = load_released(path)
    assert m.pretrained_cfg['architecture'] == 'sbnet_r50' and m.num_classes == 11


def test_wrong_architecture_names_the_differences(tmp_path):
    src = tmp_path / 'sbnet.pth.tar'
    save_released_checkpoint(src, 'sbnet')
    with pytest.raises(CheckpointError) as e:
        load_released(src, 'sinet_r50')
    msg = str(e.value)
    assert 'does not match sinet_r50' in msg and 'looks like sbnet_r50' in msg
    assert 'missing from the checkpoint' in msg and 'layer2.2.integrate' in msg


def test_shape_mismatch_is_reported(tmp_path):
    sd = make_released_state_dict('resnet50', seed=0)
    sd['layer4.2.conv3.weight'] = sd['layer4.2.conv3.weight'][:, :256]
    path = tmp_path / 'bad.pth.tar'
    torch.save({'state_dict': sd}, path)
    with pytest.raises(CheckpointError, match=r'shape differences.*layer4\.2\.conv3\.weight'):
        load_released(path)


@pytest.mark.parametrize('content,match', [
    (b'not a checkpoint at all', 'not a PyTorch checkpoint'),
    (None, 'does not hold a state dict'),
])
def test_not_a_checkpoint(tmp_path, content, match):
    path = tmp_path / 'x.pth.tar'
    if content is None:
        torch.save({'epoch': 3, 'rank1': 0.9}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_released(path)
    assert main([str(path), str(tmp_path / 'out')]) == 2


def test_pickled_code_is_not_executed(tmp_path, capfd):
    class Evil:
        def __reduce__(self):
            return (print, ('executed',))
    path = tmp_path / 'evil.pth.tar'
    torch.save({'state_dict': Evil()}, path)
    unsafe = r'holds Python objects besides tensors and plain data \(builtins.print\), which are not loaded'
    with pytest.raises(CheckpointError, match=unsafe) as e:
        load_released(path)
    assert 'weights_only=False' not in str(e.value) and 'executed' not in capfd.readouterr().out


def test_released_files_with_numpy_scalars_load(tmp_path):
    """The authors' main.py saves rank1 (a NumPy float64) beside the weights; torch.load(weights_only=True) refuses
    NumPy scalars unless they are allowed as data."""
    sd = make_released_state_dict('resnet50', seed=0)
    torch.save({'state_dict': sd, 'rank1': np.float64(0.812), 'mAP': np.float32(0.7), 'epoch': 149},
               tmp_path / 'r.pth.tar')
    assert load_released(tmp_path / 'r.pth.tar').num_classes == 625


def test_output_folder_is_not_overwritten_and_sha_checked(tmp_path):
    src = tmp_path / 'm.pth.tar'
    save_released_checkpoint(src, 'resnet50')
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'notes.txt').write_text('mine')
    with pytest.raises(FileExistsError, match='--overwrite'):
        convert(src, out)
    assert (out / 'notes.txt').read_text() == 'mine'
    with pytest.raises(CheckpointError, match='sha256 of .* expected 00'):
        convert(src, tmp_path / 'new', expected_sha256='00' * 32)
    assert not (tmp_path / 'new').exists()


def test_non_finite_weights_are_refused_unless_allowed(tmp_path, capsys):
    """A checkpoint with a NaN (a run that diverged) became a folder without a word; its embeddings are NaN."""
    src = tmp_path / 'diverged.pth.tar'
    sd = timm.create_model('vreid_r50', num_classes=5).state_dict()
    sd['layer1.0.bn1.weight'][3] = float('nan')
    sd['classifier.weight'][0, 0] = float('inf')
    torch.save({'state_dict': sd}, src)
    out = tmp_path / 'out'
    assert main([str(src), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith(f'error: {src} holds NaN or Inf values in 2 tensor(s) (e.g. '
                                                   'layer1.0.bn1.weight)') and '--allow-nonfinite' in err, err
    assert not out.exists()
    assert main([str(src), str(out), '--allow-nonfinite']) == 0
    err = capsys.readouterr().err
    assert err.startswith('warning: ') and 'holds NaN or Inf values' in err and 'written anyway' in err, err
    assert (out / 'model.safetensors').is_file()
