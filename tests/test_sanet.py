"""SANet (sanet_r50): the Statistic Attention block, its numerics in float16/bfloat16, and the commands.

Exactness against the released computation (T=4 and T=8) is in tests/test_convert.py; the parameter count in
tests/test_model.py.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from released_reference import _sa as released_sa
from released_reference import make_released_state_dict, save_released_checkpoint

from reid_eval.featurefile import load_features
from reid_eval.synthetic import make_synthetic
from sinet_cli import extract as extract_cmd
from sinet_cli import hub as hub_cmd
from sinet_cli import viz as viz_cmd
from sinet_cli.eval import main as eval_main
from sinet_cli.train import main as train_main
from sinet_timm import SANet, checkpoint_filter_fn
from sinet_timm._zoo import zoo_entries
from sinet_timm.sanet import StatisticAttention


def _active_sa(seed: int = 0) -> StatisticAttention:
    """An SA block whose recovery BN is not zero (as after training), so that the block acts."""
    torch.manual_seed(seed)
    sa = StatisticAttention(512).eval()
    torch.nn.init.normal_(sa.recover_bn.weight, 1.0, 0.1)
    torch.nn.init.normal_(sa.recover_bn.bias, 0.0, 0.1)
    sa.recover_bn.running_mean.normal_(0.0, 0.1)
    sa.recover_bn.running_var.uniform_(0.5, 2.0)
    return sa


def _released_layout(sa: StatisticAttention) -> dict[str, torch.Tensor]:
    """The block's weights under the released names and 5-D shapes (prefix 'p.')."""
    return {'p.down_channel.weight': sa.reduce.weight[..., None], 'p.down_channel.bias': sa.reduce.bias,
            'p.up_channel.0.weight': sa.recover.weight[..., None], 'p.up_channel.0.bias': sa.recover.bias,
            **{f'p.up_channel.1.{k}': v for k, v in sa.recover_bn.state_dict().items()}}


def _frames(b: int, t: int, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    """(B*T, 512, 16, 8) post-ReLU layer2 maps of 128x64 frames, with a few sparse channels (one bright position
    per frame), the case whose standardised moments are largest."""
    x = torch.relu(torch.randn(b * t, 512, 16, 8, generator=torch.Generator().manual_seed(seed))) * scale
    x[:, :8] = 0
    x[:, :8, 3, 2] = 10 * scale
    return x


def _as_clips(x: torch.Tensor, t: int) -> torch.Tensor:
    """(B*T, C, H, W) frames -> the released layout (B, C, T, H, W)."""
    return x.unflatten(0, (-1, t)).transpose(1, 2)


def test_sa_starts_as_the_identity():
    """Released init: the recovery BN is zero, so the block passes its (non-negative) input through."""
    sa = StatisticAttention(512)
    x = _frames(1, 4)
    for mode in (sa.train, sa.eval):
        mode()
        with torch.no_grad():
            assert torch.equal(sa(x), x)
    assert (_active_sa()(x) - x).abs().max() > 0.1


def test_sa_equals_the_released_block_on_its_clips():
    """float64: our block on (B*T, C, H, W) frames equals the released formulation on (B, C, T, H, W) clips;
    statistics are per 4-frame clip, so a frame's output depends on the other frames of its clip only."""
    sa = _active_sa().double()
    x = _frames(2, 4).double()
    with torch.no_grad():
        ours = sa(x)
        ref = released_sa(_released_layout(sa), 'p', _as_clips(x, 4))
        torch.testing.assert_close(_as_clips(ours, 4), ref, rtol=1e-12, atol=1e-12)
        changed = x.clone()
        changed[3] = 2 * changed[3]  # the last frame of the first clip (a mere flip would keep the statistics)
        out = sa(changed)
    assert (out[0] - ours[0]).abs().max() > 1e-6  # the first frame sees it, through the clip's statistics
    assert torch.equal(out[4:], ours[4:])  # the second clip does not


def test_constant_channel_gives_finite_output():
    """A channel constant over a clip: the released block divides 0 by 0 (NaN everywhere); ours gives its
    higher moments the value 0."""
    sa = _active_sa().double()
    x = torch.zeros(4, 512, 16, 8, dtype=torch.float64)  # every reduced channel is its bias
    with torch.no_grad():
        assert torch.isnan(released_sa(_released_layout(sa), 'p', _as_clips(x, 4))).all()
        out = sa(x)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize('scale', [0.05, 4.0])  # standard deviations ~0.03 and ~2.4: std^6 under/overflows fp16
def test_sa_statistics_survive_float16_and_bfloat16(scale):
    sa = _active_sa()
    x = _frames(2, 4, scale)
    with torch.no_grad():
        ref = sa(x)
        released_half = released_sa({k: v.half() if v.is_floating_point() else v
                                     for k, v in _released_layout(sa).items()}, 'p', _as_clips(x, 4).half())
        assert not torch.isfinite(released_half).all()  # the released block in float16
        for dtype, tol in ((torch.float16, 2e-3), (torch.bfloat16, 1e-2)):  # ~ the dtype's rounding of x
            low = copy.deepcopy(sa).to(dtype)(x.to(dtype))
            assert low.dtype == dtype and torch.isfinite(low).all()
            assert (low.float() - ref).abs().max() <= tol * ref.abs().max()


@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.gpu)])
def test_sanet_in_float16_and_bfloat16(device):
    """The whole model with released-format weights (SA active): .half(), .to(bfloat16) and autocast give finite
    embeddings in the direction of the float32 ones, on the CPU and on a GPU."""
    sd = make_released_state_dict('sanet', seed=1)
    model = timm.create_model('sanet_r50', num_classes=625, img_size=(128, 64))
    model.load_state_dict(checkpoint_filter_fn(sd, model))
    model.reset_classifier(0)
    model = model.eval().to(device)
    x = torch.randn(1, 4, 3, 128, 64, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        ref = model(x)
        outs = {dtype: copy.deepcopy(model).to(dtype)(x.to(dtype)) for dtype in (torch.float16, torch.bfloat16)}
        for dtype in (torch.float16, torch.bfloat16):
            with torch.autocast(device, dtype=dtype):
                outs[f'autocast {dtype}'] = model(x)
    for name, out in outs.items():
        assert torch.isfinite(out).all(), name
        assert F.cosine_similarity(out.float(), ref).min() >= 0.999, name


def test_sanet_model_layout_and_options():
    m = timm.create_model('sanet_r50')
    assert isinstance(m, SANet) and m.projection is None
    assert [type(b).__name__ for b in m.layer2] == ['Bottleneck', 'Bottleneck', 'StatisticAttention',
                                                    'Bottleneck', 'Bottleneck', 'StatisticAttention']
    assert m.layer2[2].reduce.out_channels == 128 and m.fixed_size_by == ''  # any frame size
    # no frame projection even with a classifier: SANet trains with cross-entropy and triplet only
    assert timm.create_model('sanet_r50', num_classes=5).projection is None
    m = timm.create_model('sanet_r50', sa_after=(0, 1, 2, 3), sa_reduction=8)
    assert sum(isinstance(b, StatisticAttention) for b in m.layer2) == 4 and m.layer2[1].reduce.out_channels == 64
    x = torch.randn(1, 8, 3, 64, 32)
    with torch.no_grad():
        assert m.eval()(x).shape == (1, 2048)
    with pytest.raises(ValueError, match='multiple of 8'):
        timm.create_model('sanet_r50', clip_len=8).eval()(x[:, :4])


def test_train_mode_outputs_and_gradients_reach_sa():
    m = timm.create_model('sanet_r50', num_classes=3, img_size=(128, 64)).train()
    out = m(torch.randn(2, 4, 3, 128, 64, generator=torch.Generator().manual_seed(0)))
    assert out.logits.shape == (2, 3) and out.frame_features is None  # no frame loss for SANet
    out.logits.logsumexp(1).mean().backward()
    sa = m.layer2[2]
    # the recovery BN starts at zero: its scale gets the gradient first, the convs once it has moved
    assert sa.recover_bn.weight.grad.abs().sum() > 0 and sa.reduce.weight.grad is not None


# ---------------------------------------------------------------------------------------------------------
# the zoo entry and the commands


@pytest.fixture(scope='module')
def released_file(tmp_path_factory) -> Path:
    """A released-format SANet checkpoint for MARS (625 identities, NumPy rank1), as the authors' main.py saves."""
    path = tmp_path_factory.mktemp('released') / 'sanet_mars.pth.tar'
    save_released_checkpoint(path, 'sanet', seed=5)
    return path


def test_zoo_entry_hub_convert_and_card(released_file, tmp_path, capsys):
    entry = zoo_entries()['sanet_r50.mars']
    assert entry['source']['file_id'] == '1yhX4trD02-ryJ7jRObstmHk9IZb9Smc3' and entry['num_classes'] == 625
    assert entry['metrics']['paper'] == {'mAP': 86.0, 'rank1': 91.2}
    assert entry['metrics']['authors_reproduced'] == {'mAP': 86.7, 'rank1': 91.2}
    out = tmp_path / 'hub'
    assert hub_cmd.main(['convert', 'sanet_r50.mars', '--src', str(released_file), '--out', str(out)]) == 0
    assert 'the zoo entry has none yet' in capsys.readouterr().out  # the sha256 is printed, not recorded
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['architecture'] == 'sanet_r50' and cfg['num_classes'] == 625
    assert cfg['pretrained_cfg']['tag'] == 'mars' and cfg['reid']['zoo_entry'] == 'sanet_r50.mars'
    model = timm.create_model(f'local-dir:{out}', pretrained=True, num_classes=0)
    assert isinstance(model, SANet) and model.projection is None
    assert hub_cmd.main(['card', 'sanet_r50.mars', '--out', str(out)]) == 0
    text = (out / 'README.md').read_text()
    assert '| paper (Bai et al., IEEE TCSVT 2021) | 86.0 | 91.2 |' in text
    assert "| released checkpoint (the authors' numbers) | 86.7 | 91.2 |" in text
    assert '@article{bai2021sanet' in text and 'Statistic Attention' in text
    # not evaluated here yet: the model-index holds the authors' own numbers for this very checkpoint
    assert "name: the authors' README (released checkpoint)" in text.split('---\n')[1]


@pytest.fixture(scope='module')
def mars(tmp_path_factory) -> Path:
    """A small MARS-format set: 9 query and 5 gallery tracklets (the evaluated model sees 256x128 frames)."""
    return make_synthetic('mars', tmp_path_factory.mktemp('mars6'), num_ids=6, lengths=(1, 2, 3))


QUIET = ['--device', 'cpu', '--workers', '0', '--no-progress']


def test_eval_prints_sanets_paper_numbers(released_file, mars, tmp_path, capsys):
    out = tmp_path / 'r.json'
    assert eval_main(['--checkpoint', str(released_file), '--dataset', 'mars', '--root', str(mars), '--mode',
                      'sampled', '--no-cache', '--output', str(out), *QUIET]) == 0
    printed = capsys.readouterr().out
    assert re.search(r'^  paper +86\.0 +91\.2 ', printed, re.M), printed
    res = json.loads(out.read_text())
    assert res['architecture'] == 'sanet_r50' and res['paper'] == {'mAP': 86.0, 'rank1': 91.2}


def test_extract_and_viz_cam_take_sanet(released_file, mars, tmp_path):
    folders = [p for p in sorted((mars / 'mars' / 'bbox_test').iterdir()) if len(list(p.iterdir())) >= 4][:2]
    listing = tmp_path / 'tracklets.txt'  # two tracklets: all frames of two of the set's identity folders
    listing.write_text(''.join(f'{p.name}: {p}\n' for p in folders))
    out = tmp_path / 'f.safetensors'
    assert extract_cmd.main([str(listing), '--checkpoint', str(released_file), '--output', str(out),
                             '--batch-clips', '4', *QUIET]) == 0
    feats = load_features(out)
    assert feats.metadata['architecture'] == 'sanet_r50' and feats.names == [p.name for p in folders]
    assert feats.features.shape == (2, 2048) and torch.isfinite(feats.features).all()
    picture = tmp_path / 'cam.png'
    frames = folders[0]
    assert viz_cmd.main(['cam', str(frames), '--models', str(released_file), '--frames', '4', '--frame-size', '64x32',
                         '--device', 'cpu', '--output', str(picture)]) == 0
    assert picture.stat().st_size > 0


def test_train_runs_the_sanet_recipe(tmp_path, capsys):
    """The released recipe with SANet: cross-entropy + triplet, no frame loss; the SA blocks learn."""
    root = make_synthetic('mars', tmp_path / 'data', num_ids=24, img_size=(64, 32))
    run = tmp_path / 'run'
    assert train_main(['--model', 'sanet_r50', '--model-kwargs', 'layers=(1,1,1,1)', 'sa_after=(0,)', '--dataset',
                       'mars', '--root', str(root), '--output', str(run), '--no-pretrained', '--img-size', '64', '32',
                       '--num-identities', '4', '--num-instances', '2', '--epochs', '1', '--eval-every', '0',
                       '--no-final-eval', '--workers', '0', '--no-progress']) == 0
    cfg = json.loads((run / 'config.json').read_text())
    assert cfg['derived']['architecture'] == 'sanet_r50' and cfg['derived']['frame_loss'] is False
    model = timm.create_model(f'local-dir:{run / "last"}', pretrained=True, num_classes=0)
    sa = model.layer2[1]
    assert isinstance(model, SANet) and isinstance(sa, StatisticAttention)
    assert sa.recover_bn.weight.abs().sum() > 0  # zero at the start: the block was trained
