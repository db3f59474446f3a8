"""The VKD family: equal to the authors' TriNet (tests/vkd_reference.py) at eval, their checkpoints and zips load."""
from __future__ import annotations

import json
import zipfile

import pytest
import timm
import torch
from timm.models._features_fx import get_graph_node_names
from vkd_reference import make_released_state_dict, released_forward, released_keys, released_logits

from sinet_cli.convert import main
from sinet_timm.archs import ARCHITECTURES, FAMILIES, RELEASED_NAMES, canonical_arch, family_of
from sinet_timm.convert import CheckpointError, infer_arch, load_released, zip_checkpoints
from sinet_timm.errors import ModelInputError
from sinet_timm.vkd import VKDNet, checkpoint_filter_fn

THEIRS = {'vkd_r34': 'resnet34', 'vkd_r50': 'resnet50', 'vkd_r101': 'resnet101', 'vkd_r50bam': 'resnet50bam',
          'vkd_d121': 'densenet121', 'vkd_mbv2': 'mobilenet'}
DIMS = {'vkd_r34': 512, 'vkd_r50': 2048, 'vkd_r101': 2048, 'vkd_r50bam': 2048, 'vkd_d121': 1024, 'vkd_mbv2': 1280}


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _loaded(arch: str, seed: int = 0, num_classes: int = 625) -> tuple[VKDNet, dict[str, torch.Tensor]]:
    sd = make_released_state_dict(THEIRS[arch], seed=seed, num_classes=num_classes)
    model = timm.create_model(arch, num_classes=num_classes)
    model.load_state_dict(checkpoint_filter_fn(sd, model), strict=True)
    return model.eval(), sd


def _clips(b: int, t: int, h: int = 64, w: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, t, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('arch', list(THEIRS))
def test_equal_to_the_authors_trinet_at_eval(arch):
    """Embedding (pre-BN, frame mean) and logits equal the reference on random weights in the authors' layout."""
    model, sd = _loaded(arch)
    x = _clips(1, 2)
    with torch.no_grad():
        emb = model.forward_head(model.forward_features(x), pre_logits=True)
        ref = released_forward(sd, x, THEIRS[arch])
        assert emb.shape == (1, DIMS[arch]) and _rel_err(emb, ref) <= 1e-5
        assert _rel_err(model(x), released_logits(sd, x, THEIRS[arch])) <= 1e-5
        model.reset_classifier(0)
        assert _rel_err(model(x), ref) <= 1e-5  # the re-ID embedding, what the authors test with
    # no activation after the last block / norm5 / last 1x1 conv: the authors' embedding has negative entries
    assert (ref < 0).any()


def test_full_size_frames_and_crops():
    """256x128 frames (their test size); a (B, 3, H, W) batch is a batch of one-frame clips."""
    model, sd = _loaded('vkd_r50', seed=2, num_classes=0)
    x = _clips(1, 1, 256, 128, seed=3)
    with torch.no_grad():
        maps = model.forward_features(x[:, 0])
        assert maps.shape == (1, 2048, 16, 8)  # layer4 keeps stride 16
        emb = model.forward_head(maps)
        assert _rel_err(emb, released_forward(sd, x, 'resnet50')) <= 1e-5
        torch.testing.assert_close(model.forward_head(maps[:, None]), emb, rtol=0, atol=0)


def test_frame_mean_and_mobilenet_crops():
    model, _ = _loaded('vkd_mbv2', seed=3, num_classes=0)
    x = _clips(2, 3, seed=4)
    with torch.no_grad():
        per_frame = torch.stack([model(x[:, i]) for i in range(3)], dim=1)
        torch.testing.assert_close(model(x), per_frame.mean(dim=1), rtol=1e-5, atol=1e-6)


def test_pretrained_cfg_and_registry():
    assert set(timm.list_models('vkd_*')) == set(family_of('vkd_r50').archs) == set(THEIRS)
    assert set(THEIRS) <= set(ARCHITECTURES)
    cfg = timm.get_pretrained_cfg('vkd_r50')
    assert (cfg.protocol, cfg.license, cfg.input_size, cfg.interpolation) == ('vkd', 'mit', (3, 256, 128), 'bicubic')
    assert cfg.mean == (0.485, 0.456, 0.406) and cfg.hf_hub_id == 'timm/resnet50.tv_in1k'
    model = timm.create_model('vkd_d121')
    assert model.pretrained_cfg['protocol'] == 'vkd'
    data = timm.data.resolve_data_config({}, model=model)
    assert data['input_size'] == (3, 256, 128) and data['interpolation'] == 'bicubic'
    # one list of families: names of the authors' code resolve per family
    assert [f.name for f in FAMILIES][:3] == ['sinet', 'sanet', 'vkd']  # later families (TF-CLIP) follow
    assert canonical_arch('resnet50') == 'vreid_r50' == RELEASED_NAMES['resnet50']  # SINet's baseline, as before
    assert canonical_arch('resnet50', 'vkd') == 'vkd_r50' and canonical_arch('mobilenet') == 'vkd_mbv2'


def test_input_errors():
    model = timm.create_model('vkd_mbv2').eval()
    for bad, match in ((torch.zeros(1, 2, 3, 64, 32, dtype=torch.uint8), 'float frames'),
                       (torch.zeros(3, 64, 32), r'3-D tensor'),
                       (torch.zeros(1, 3, 2, 64, 32), 'channels at dim -3'),
                       (torch.zeros(1, 2, 3, 16, 16), 'too small')):
        with pytest.raises(ModelInputError, match=match):
            model(bad)


def test_checkpoint_filter_and_infer_arch_round_trip():
    """Their layout -> ours -> ours again (unchanged); both layouts name the architecture."""
    for arch, theirs in THEIRS.items():
        assert infer_arch(dict.fromkeys(released_keys(theirs))) == arch  # the keys tell
    model, sd = _loaded('vkd_r50bam', num_classes=7)  # BAM: the renamed modules
    own = model.state_dict()
    assert infer_arch(own) == 'vkd_r50bam'
    again = checkpoint_filter_fn(dict(own), model)
    assert again.keys() == own.keys() and all(torch.equal(again[k], own[k]) for k in own)
    torch.testing.assert_close(own['classifier.weight'], sd['classifier.classifier.weight'])
    torch.testing.assert_close(own['backbone.layer2.bam.channel_gate.fc_out.bias'],
                               sd['backbone.features_layers.2.0.bam.channel_att.gate_c.gate_c_fc_final.bias'])
    # an embedding model leaves the classifier out; a DataParallel prefix is accepted
    bare = timm.create_model('vkd_r50bam')
    filtered = checkpoint_filter_fn({f'module.{k}': v for k, v in sd.items()}, bare)
    bare.load_state_dict(filtered, strict=True)


def test_pretrained_overlay_file_in_their_format(tmp_path):
    """timm.create_model(pretrained=True, pretrained_cfg_overlay=dict(file=...)) on their chk file (a legacy,
    pre-zip torch.save of the state dict, as torch 1.3 wrote it)."""
    sd = make_released_state_dict('mobilenet', seed=5)
    path = tmp_path / 'chk_end'
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    model = timm.create_model('vkd_mbv2', pretrained=True, num_classes=0,
                              pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = _clips(1, 2, seed=6)
    with torch.no_grad():
        assert _rel_err(model(x), released_forward(sd, x, 'mobilenet')) <= 1e-5
    with pytest.raises(CheckpointError, match=r'does not fit vkd_r34\. It looks like vkd_mbv2\.'):
        timm.create_model('vkd_r34', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def _run(zf: zipfile.ZipFile, root: str, arch_name: str, sd: dict, dataset: str = 'mars', chk: str = 'chk_end',
         hparams_backbone: str | None = None, num_classes: int = 625) -> str:
    """One of the authors' run folders inside a zip: RUN/chk/NAME (legacy torch.save of the TriNet state dict),
    RUN/params/params.json (the command line) and hparams.json (the TriNet's arguments)."""
    import io
    buf = io.BytesIO()
    torch.save(sd, buf, _use_new_zipfile_serialization=False)
    zf.writestr(f'{root}/chk/{chk}', buf.getvalue())
    zf.writestr(f'{root}/params/params.json', json.dumps({'dataset_name': dataset, 'backbone': 'resnet50'}))
    zf.writestr(f'{root}/params/hparams.json', json.dumps(
        {'backbone_type': hparams_backbone or arch_name, 'num_classes': num_classes, 'pretrained': True}))
    zf.writestr(f'{root}/git_log.txt', 'commit 0000\n')
    return f'{root}/chk/{chk}'


@pytest.fixture(scope='module')
def distilled_zip(tmp_path_factory) -> tuple:
    """A zip laid out like the authors' distilled.zip: a MobileNet student on MARS (whose params.json says
    resnet50: a distillation run records the option's default there) and a DenseNet one on Duke."""
    path = tmp_path_factory.mktemp('zips') / 'distilled.zip'
    mbv2 = make_released_state_dict('mobilenet', seed=7)
    d121 = make_released_state_dict('densenet121', seed=8, num_classes=702)
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as zf:
        zf.writestr('distilled_public/', '')
        a = _run(zf, 'distilled_public/mars/selfdistill/distill_mars_mobilenet', 'mobilenet', mbv2, chk='chk_di_1')
        b = _run(zf, 'distilled_public/duke/selfdistill/distill_duke_densenet121', 'densenet121', d121,
                 dataset='duke-video-reid', chk='chk_di_1', num_classes=702)
    return path, {a: ('vkd_mbv2', mbv2, 'mars', 625), b: ('vkd_d121', d121, 'dukev', 702)}


def test_convert_a_zip_member_and_load_it(distilled_zip, tmp_path, capsys):
    path, members = distilled_zip
    assert zip_checkpoints(path) == list(members)
    member = next(iter(members))
    out = tmp_path / 'hub'
    assert main([f'{path}::{member}', str(out)]) == 0
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['architecture'] == 'vkd_mbv2' and cfg['num_classes'] == 625 and cfg['reid']['dataset'] == 'mars'
    assert cfg['pretrained_cfg']['protocol'] == 'vkd' and cfg['reid']['protocol'].startswith('vkd')
    src = cfg['source']
    assert src['filename'] == 'distilled.zip' and src['member'] == member
    assert len(src['sha256']) == 64 and len(src['member_sha256']) == 64 and src['sha256'] != src['member_sha256']
    model = timm.create_model(f'local-dir:{out}', pretrained=True, num_classes=0).eval()
    assert model.pretrained_cfg['protocol'] == 'vkd'
    x = _clips(1, 2, seed=9)
    with torch.no_grad():
        assert _rel_err(model(x), released_forward(members[member][1], x, 'mobilenet')) <= 1e-5
    # the same member straight into timm (no conversion) and into load_released
    m2 = timm.create_model('vkd_mbv2', pretrained=True, num_classes=0,
                           pretrained_cfg_overlay=dict(file=f'{path}::{member}')).eval()
    assert load_released(f'{path}::{member}').num_classes == 625
    with torch.no_grad():
        torch.testing.assert_close(m2(x), model(x))


def test_convert_every_checkpoint_of_a_zip(distilled_zip, tmp_path, capsys):
    path, members = distilled_zip
    assert main([str(path), str(tmp_path / 'all')]) == 0
    for member, (arch, _, dataset, classes) in members.items():
        run, chk = member.split('/chk/')
        cfg = json.loads((tmp_path / 'all' / run / chk / 'config.json').read_text())
        assert (cfg['architecture'], cfg['reid']['dataset'], cfg['num_classes']) == (arch, dataset, classes)
    assert 'wrote 2 folders' in capsys.readouterr().out
    assert main([str(path), str(tmp_path / 'x'), '--arch', 'vkd_r50']) == 2  # one arch for many files: refused


def test_zip_errors(distilled_zip, tmp_path, capsys):
    path, members = distilled_zip
    with pytest.raises(CheckpointError, match='holds 2 checkpoints; name one as .*distilled.zip::MEMBER'):
        load_released(path)
    with pytest.raises(CheckpointError, match=r"has no member 'nope/chk/chk_end'; its checkpoints are:\n.*chk_di_1"):
        load_released(f'{path}::nope/chk/chk_end')
    not_zip = tmp_path / 'baseline.zip'
    not_zip.write_bytes(b'PK\x03\x04 truncated download')
    assert main([str(not_zip), str(tmp_path / 'o')]) == 2
    assert 'is not a readable zip archive' in capsys.readouterr().err
    with pytest.raises(CheckpointError, match=r'sha256 of .*distilled.zip is .*, expected 00'):
        from sinet_timm.convert import convert
        convert(f'{path}::{next(iter(members))}', tmp_path / 'o2', expected_sha256='00' * 32)
    # hparams.json names the network: weights of another one are refused, with both names
    bad = tmp_path / 'mixed.zip'
    with zipfile.ZipFile(bad, 'w') as zf:
        member = _run(zf, 'baseline_public/mars/base_mars_resnet34', 'resnet34', members[next(iter(members))][1],
                      hparams_backbone='resnet34')
    with pytest.raises(CheckpointError, match=r'hparams.json \(backbone_type\) say vkd_r34, but the weights are '
                                              r'those of vkd_mbv2'):
        load_released(f'{bad}::{member}')
    assert load_released(f'{bad}::{member}', 'mobilenet').pretrained_cfg['architecture'] == 'vkd_mbv2'


def test_features_only_per_frame():
    model = timm.create_model('vkd_r50', features_only=True, out_indices=(2, 4)).eval()
    with torch.no_grad():
        maps = model(_clips(1, 2, 64, 32))
    assert [tuple(m.shape) for m in maps] == [(1, 2, 512, 8, 4), (1, 2, 2048, 4, 2)]  # layer4 keeps stride 16
    assert model.feature_info.reduction() == [8, 16]


def test_zoo_entries_and_their_hub_conversion(distilled_zip, tmp_path):
    """The zoo's VKD entries name a member of the authors' zips; sinet-hub convert reads it in place."""
    from sinet_timm import hub
    from sinet_timm._zoo import resolve_entry, zoo_entries

    for name, member in (('vkd_r50.mars', 'distilled_public/mars/selfdistill/distill_mars_resnet50/chk/chk_di_1'),
                         ('vkd_r50.mars_base', 'baseline_public/mars/base_mars_resnet50/chk/chk_end')):
        entry = zoo_entries()[name]
        assert (entry['protocol'], entry['license'], entry['source']['member']) == ('vkd', 'mit', member)
        assert timm.get_pretrained_cfg(name).protocol == 'vkd'
        card = hub.card_text(entry)
        assert 'https://github.com/aimagelab/VKD' in card and 'Porrello et al., ECCV 2020' in card
        assert 'trapezoid' in card and 'feature before the BN-neck' in card
    # an entry laid out like vkd_r50.mars, for the small MobileNet student of the test zip
    path, members = distilled_zip
    member = next(iter(members))
    entry, _ = resolve_entry('vkd_r50.mars')
    text = (resolve_entry('vkd_r50.mars')[1].read_text().replace('vkd_r50', 'vkd_mbv2')
            .replace(entry['source']['member'], member))
    yaml_file = tmp_path / 'vkd_mbv2.mars.yaml'
    yaml_file.write_text(text)
    out = hub.convert_entry(yaml_file, tmp_path / 'hub', src=path, log=lambda m: None)
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['pretrained_cfg']['tag'] == 'mars' and cfg['pretrained_cfg']['protocol'] == 'vkd'
    assert cfg['source']['member'] == member and cfg['reid']['zoo_entry'] == 'vkd_mbv2.mars'
    with pytest.raises(Exception, match='download it and pass it with --src'):
        hub.convert_entry(yaml_file, tmp_path / 'hub2', log=lambda m: None)


def test_bn_neck_bias_is_fixed_and_training_reaches_every_parameter():
    """The authors keep the BN-neck bias at 0: a buffer (their checkpoint's value loads into it), so every
    parameter gets a gradient in train mode (timm's backward test, DDP without find_unused_parameters); fx traces
    the train-mode graph and TorchScript compiles the eval one."""
    model, sd = _loaded('vkd_r34', seed=4)
    assert 'bottleneck.bias' in model.state_dict() and 'bottleneck.bias' not in dict(model.named_parameters())
    assert torch.equal(model.bottleneck.bias, sd['classifier.bottleneck.bias'])
    model.train()
    out = model(_clips(2, 2))
    (out.logits.sum() + out.embedding.sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing and torch.equal(model.bottleneck.bias, sd['classifier.bottleneck.bias'])
    assert tuple(model(_clips(2, 1)[:, 0]).shape) == (2, 625)  # crops: logits only
    train_nodes, _ = get_graph_node_names(model)  # timm's fx tracer (what features_only with fx uses)
    assert 'frames' in train_nodes and 'bottleneck' in train_nodes  # input checks and BN-neck: leaves
    model.eval()
    scripted = torch.jit.script(model)
    with torch.no_grad():
        assert _rel_err(scripted(_clips(1, 2)), model(_clips(1, 2))) <= 1e-6
    with pytest.raises(Exception, match='frames are too small'):
        scripted(_clips(1, 2, 16, 16))
