"""Pretrained weights through timm's own mechanisms, offline: ImageNet init, Hub cache, local-dir, file overlay."""
from __future__ import annotations

import json
import socket
import textwrap
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from conftest import folder_bytes, layout_hub_cache, run_offline
from huggingface_hub import constants
from safetensors.torch import save
from timm.models import save_for_hf

from sinet_timm.convert import CheckpointError


def _imagenet_resnet50_bytes() -> tuple[bytes, dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    sd = torchvision.models.resnet50(weights=None).state_dict()  # timm's resnet50 has the same keys
    sd = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in sd.items()}
    return save(sd), sd


def test_untagged_pretrained_starts_from_imagenet_resnet50(tmp_path):
    """pretrained=True on `sinet_r50` loads timm/resnet50.tv_in1k from the Hub cache into the backbone."""
    data, sd = _imagenet_resnet50_bytes()
    cache = tmp_path / 'hub'
    layout_hub_cache(cache, 'timm/resnet50.tv_in1k', {'model.safetensors': data})
    out = tmp_path / 'loaded.safetensors'
    code = textwrap.dedent(f"""
        import timm, sinet_timm
        from safetensors.torch import save_file
        m = timm.create_model('sinet_r50', pretrained=True)
        save_file(m.state_dict(), {str(out)!r})
    """)
    r = run_offline(code, cache)
    assert r.returncode == 0, r.stderr[-3000:]
    from safetensors.torch import load_file
    got = load_file(str(out))
    # blocks after the inserted modules shift: torchvision layer2.2 is our layer2.3, layer3.5 -> layer3.7
    torch.testing.assert_close(got['conv1.weight'], sd['conv1.weight'])
    torch.testing.assert_close(got['layer2.3.conv2.weight'], sd['layer2.2.conv2.weight'])
    torch.testing.assert_close(got['layer3.7.bn3.running_var'], sd['layer3.5.bn3.running_var'])
    torch.testing.assert_close(got['layer4.2.conv3.weight'], sd['layer4.2.conv3.weight'])
    assert not got['layer2.0.conv1.bias'].any()  # biases the ImageNet weights lack start at zero
    assert not got['layer2.2.expand.weight'].any()  # IDM keeps its identity init
    assert 'fc.weight' not in got and 'layer3.2.kgm_conv.weight' in got


@pytest.mark.slow  # 13-20 s in CI: out of the default run (under 5 minutes)
def test_zoo_entry_loads_from_hub_cache_and_hf_hub_name(tmp_path):
    """`sinet_r50.mars` resolves to its Hub repo; the cache laid out here stands in for the download."""
    torch.manual_seed(0)
    src = timm.create_model('sinet_r50', num_classes=625).eval()
    folder = tmp_path / 'export'
    save_for_hf(src, str(folder), safe_serialization=True)
    repo_id = timm.get_pretrained_cfg('sinet_r50.mars').hf_hub_id
    cache = tmp_path / 'hub'
    layout_hub_cache(cache, repo_id, folder_bytes(folder))
    clip = torch.randn(1, 4, 3, 256, 128)
    with torch.no_grad():
        ref = src.forward_head(src.forward_features(clip), pre_logits=True)
    torch.save(clip, tmp_path / 'clip.pt')
    code = textwrap.dedent(f"""
        import torch, timm, sinet_timm
        clip = torch.load({str(tmp_path / 'clip.pt')!r})
        outs = []
        for name, kw in (('sinet_r50.mars', {{}}), ('hf-hub:{repo_id}', {{}})):
            m = timm.create_model(name, pretrained=True, num_classes=0).eval()
            with torch.no_grad():
                outs.append(m(clip))
        full = timm.create_model('sinet_r50.mars', pretrained=True).eval()
        assert full.num_classes == 625 and full.projection is not None
        torch.save(torch.stack(outs), {str(tmp_path / 'out.pt')!r})
    """)
    r = run_offline(code, cache)
    assert r.returncode == 0, r.stderr[-3000:]
    outs = torch.load(tmp_path / 'out.pt')
    torch.testing.assert_close(outs[0], ref)
    torch.testing.assert_close(outs[1], ref)


def test_local_dir_and_file_overlay(tmp_path, monkeypatch):
    """Local folders and files load as timm loads them, without touching the network (not even the Hub probe:
    the Hub endpoint here is a local socket that records any connection)."""
    torch.manual_seed(0)
    src = timm.create_model('sbnet_r50', num_classes=9).eval()
    save_for_hf(src, str(tmp_path / 'm'), safe_serialization=True)
    clip = torch.randn(1, 8, 3, 256, 128)
    with socket.socket() as hub, torch.no_grad():
        hub.bind(('127.0.0.1', 0))
        hub.listen(8)
        hub.setblocking(False)
        monkeypatch.setattr(constants, 'ENDPOINT', f'http://127.0.0.1:{hub.getsockname()[1]}')
        ref = src(clip)
        m = timm.create_model(f'local-dir:{tmp_path / "m"}', pretrained=True).eval()
        assert m.num_classes == 9
        torch.testing.assert_close(m(clip), ref)
        # as in timm, the overlay states the checkpoint's classifier size, else the classifier is re-initialised
        overlay = dict(file=str(tmp_path / 'm' / 'model.safetensors'), num_classes=9)
        f = timm.create_model('sbnet_r50', pretrained=True, num_classes=9, pretrained_cfg_overlay=overlay).eval()
        torch.testing.assert_close(f(clip), ref)
        with pytest.raises(BlockingIOError):
            hub.accept()  # nobody connected
    cfg = json.loads((tmp_path / 'm' / 'config.json').read_text())
    assert cfg['architecture'] == 'sbnet_r50'


def test_overlay_file_errors_name_the_file(tmp_path):
    """pretrained_cfg_overlay=dict(file=...): a missing, unreadable or other-architecture file is named with what
    is wrong (timm alone gave an IndexError from our Hub help, torch's weights_only text, or 400 missing keys)."""
    def load(file: Path, arch: str = 'sinet_r50'):
        return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(file)))

    with pytest.raises(CheckpointError, match=r"^pretrained_cfg_overlay=dict\(file='.*nowhere\.pth\.tar'\): "
                                              r"checkpoint not found"):
        load(tmp_path / 'nowhere.pth.tar')
    (tmp_path / 'junk.pth.tar').write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match=r'junk\.pth\.tar is not a PyTorch checkpoint that can be read safely'):
        load(tmp_path / 'junk.pth.tar')
    (tmp_path / 'junk.safetensors').write_bytes(b'\xff' * 16)
    with pytest.raises(CheckpointError, match=r'junk\.safetensors is not a readable safetensors file'):
        load(tmp_path / 'junk.safetensors')
    torch.save(timm.create_model('sbnet_r50').state_dict(), tmp_path / 'sbnet.pth')
    with pytest.raises(CheckpointError, match=r"\.pth'\) does not fit sinet_r50\. It looks like sbnet_r50\.\n"
                                              r'  missing from the checkpoint \(57\): layer2\.2\.reduce\.weight'):
        load(tmp_path / 'sbnet.pth')
    assert load(tmp_path / 'sbnet.pth', 'sbnet_r50').num_classes == 0  # the right file still loads


def test_offline_without_cache_fails(tmp_path):
    r = run_offline("import timm, sinet_timm; timm.create_model('sinet_r50.mars', pretrained=True)", tmp_path / 'empty')
    assert r.returncode != 0
    assert 'WeightsUnavailableError: could not get the pretrained weights of sinet_r50.mars' in r.stderr
    assert 'sinet-convert' in r.stderr and 'local-dir:' in r.stderr  # says how to get the weights

