"""TF-CLIP (sinet_timm.tfclip) against the released eval computation (tests/tfclip_reference.py), its checkpoints,
camera ids and pretrained cfgs. Shallow ViTs (``depth``) keep the default run fast; the full ViT-B/16 is `slow`."""
from __future__ import annotations

import json

import pytest
import timm
import torch
import torch.nn as nn
from tfclip_reference import (
    NUM_CAMERAS,
    TRAINING_ONLY_PREFIXES,
    make_released_state_dict,
    released_forward,
    save_released_checkpoint,
)
from timm.layers import create_feature_extractor, get_graph_node_names, set_scriptable

import reid_eval
from reid_eval.errors import EvalError, VizError
from reid_eval.synthetic import demo_dataset_root
from reid_eval.viz import activation_maps
from sinet_timm.errors import ModelInputError
from sinet_timm.export import export_onnx
from sinet_timm.tfclip import CAMERA_FALLBACK_ENV, TFCLIP, checkpoint_filter_fn


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _clips(b: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, t, 3, 256, 128, generator=torch.Generator().manual_seed(seed))


def _loaded(sd: dict[str, torch.Tensor], **kw) -> TFCLIP:
    model = timm.create_model('tfclip_vit_b16', **kw).eval()
    model.load_state_dict(checkpoint_filter_fn(sd, model), strict=True)
    return model


def test_backbone_is_timms_clip_vit_b16_quickgelu_at_256x128():
    ours = timm.create_model('tfclip_vit_b16', device='meta').image_encoder
    timms = timm.create_model('vit_base_patch16_clip_quickgelu_224', img_size=(256, 128), num_classes=0,
                              device='meta')
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in timms.state_dict().items()}
    assert ours.pos_embed.shape == (1, 129, 768)  # 16x8 patches + the class token
    assert type(ours.blocks[0].mlp.act).__name__ == 'QuickGELU' and ours.blocks[0].attn.fused_attn


def test_equals_the_released_computation_on_random_weights():
    """One ViT block (the reference reads the depth from the keys): B=2 clips of T=8 frames, other cameras."""
    sd = make_released_state_dict(seed=1, num_cameras=6, layers=1, module_prefix=True)
    model = _loaded(sd, depth=1)
    clips, cams = _clips(2, 8), torch.tensor([5, 2])
    with torch.no_grad():
        ours, ref = model(clips, cams), released_forward(sd, clips, cams)
    assert ours.shape == (2, 2048) and _rel_err(ours, ref) <= 1e-5
    # the camera is part of the computation (the reference agrees with each)
    with torch.no_grad():
        other = model(clips, torch.tensor([0, 2]))
    assert _rel_err(other[1], ours[1]) <= 1e-5 and (other[0] - ours[0]).abs().max() > 1e-2


@pytest.mark.slow
def test_full_vit_b16_equals_the_released_computation():
    sd = make_released_state_dict(seed=0, num_cameras=15)
    model = _loaded(sd, num_cameras=15)
    clips, cams = _clips(1, 8, seed=3), torch.tensor([11])
    with torch.no_grad():
        ours, ref = model(clips, cams), released_forward(sd, clips, cams)
    assert _rel_err(ours, ref) <= 1e-5


def test_filter_drops_training_only_tensors_and_prefixes():
    sd = make_released_state_dict(seed=2, num_cameras=2, num_classes=150, layers=1, module_prefix=True)
    model = timm.create_model('tfclip_vit_b16', depth=1, num_cameras=2, device='meta')
    got = checkpoint_filter_fn({'state_dict': sd}, model)
    assert set(got) == set(model.state_dict())  # nothing missing, nothing left over
    assert not any(k.startswith(('module.', *TRAINING_ONLY_PREFIXES)) for k in got)
    assert any(k.startswith(tuple(f'module.{p}' for p in TRAINING_ONLY_PREFIXES)) for k in sd)  # they were there
    assert 'TMD.resblocks.0.message_attn.in_proj_weight' in got  # TMD keeps the authors' names
    torch.testing.assert_close(got['proj.weight'], sd['module.image_encoder.proj'].t())
    # our own state dict passes unchanged; a classifier is dropped from an embedding model
    own = {k: torch.zeros(v.shape) for k, v in model.state_dict().items()}
    assert set(checkpoint_filter_fn({**own, 'head.weight': torch.zeros(3, 2048)}, model)) == set(own)


def test_openai_clip_init_maps_timms_clip_tower_and_resizes_positions():
    """The `.openai` tag's file (timm's CLIP ViT-B/16 tower, 224x224): backbone and projection from it, positions
    resized bilinearly to the 16x8 grid as the authors do, cameras and TMD keep their init."""
    clip = timm.create_model('vit_base_patch16_clip_quickgelu_224', depth=1, num_classes=512).state_dict()
    model = timm.create_model('tfclip_vit_b16', depth=1)
    got = checkpoint_filter_fn(clip, model)
    model.load_state_dict(got, strict=True)
    grid = clip['pos_embed'][:, 1:].reshape(1, 14, 14, 768).permute(0, 3, 1, 2)
    resized = nn.functional.interpolate(grid, size=(16, 8), mode='bilinear').flatten(2).transpose(1, 2)
    torch.testing.assert_close(model.image_encoder.pos_embed[:, 1:], resized)
    torch.testing.assert_close(model.proj.weight, clip['head.weight'])
    torch.testing.assert_close(model.image_encoder.blocks[0].attn.qkv.weight, clip['blocks.0.attn.qkv.weight'])
    assert timm.get_pretrained_cfg('tfclip_vit_b16.openai').hf_hub_id == 'timm/vit_base_patch16_clip_224.openai'


def test_create_model_loads_the_released_file_by_tag(tmp_path):
    """pretrained_cfg_overlay=dict(file=...) on the authors' file: the .lsvid tag brings its 15 cameras."""
    path = tmp_path / 'best_model.pth.tar'
    sd = save_released_checkpoint(path, seed=4, num_cameras=NUM_CAMERAS['lsvid'], num_classes=842, layers=1)
    model = timm.create_model('tfclip_vit_b16.lsvid', pretrained=True, depth=1,
                              pretrained_cfg_overlay=dict(file=str(path))).eval()
    assert model.num_cameras == 15 and model.num_classes == 0
    cfg = model.pretrained_cfg
    assert (cfg['protocol'], cfg['camera_input'], cfg['num_cameras']) == ('tfclip', True, 15)
    clips, cams = _clips(2, 3, seed=5), torch.tensor([14, 0])
    with torch.no_grad():
        assert _rel_err(model(clips, cams), released_forward(sd, clips, cams)) <= 1e-5
    # a file of another camera count says which shapes differ
    with pytest.raises(Exception, match='cv_embed'):
        timm.create_model('tfclip_vit_b16.mars', pretrained=True, depth=1, pretrained_cfg_overlay=dict(file=str(path)))


def test_camera_ids_are_required_unless_the_mean_fallback_is_asked_for():
    sd = make_released_state_dict(seed=6, num_cameras=6, layers=1)
    model = _loaded(sd, depth=1)
    clips = _clips(2, 2, seed=7)
    for bad, what in ((None, 'camera id'), (torch.tensor([0, 6]), 'out of range'), (torch.tensor([-1, 0]), 'range'),
                      (torch.tensor([0.0, 1.0]), 'integer'), (torch.tensor([1]), r'shape \(2,\)')):
        with pytest.raises(ModelInputError, match=what) as e:
            model(clips, bad)
        assert '\n' not in str(e.value)
    model.camera_fallback = 'mean'
    with torch.no_grad():
        got = model(clips)
        mean = sd['cv_embed'].mean(0, keepdim=True)
        ref = released_forward({**sd, 'cv_embed': mean}, clips, torch.zeros(2, dtype=torch.long))
    assert _rel_err(got, ref) <= 1e-5
    model.camera_fallback = 'median'
    with pytest.raises(ModelInputError, match="'mean'"):
        model(clips)


def test_the_camera_fallback_environment_variable_sets_the_default(monkeypatch):
    """$SINET_TIMM_CAMERA_FALLBACK (for tools that can only call model(x)): read when camera_fallback is not given;
    unset or empty requires ids, 'mean' is the mean camera, other values are one-line errors naming it; an explicit
    argument (None included) wins."""
    assert CAMERA_FALLBACK_ENV == 'SINET_TIMM_CAMERA_FALLBACK'
    small = dict(depth=1, embed_dim=64, num_heads=2, proj_dim=32)
    monkeypatch.delenv(CAMERA_FALLBACK_ENV, raising=False)
    assert TFCLIP(**small).camera_fallback is None
    monkeypatch.setenv(CAMERA_FALLBACK_ENV, '')
    assert TFCLIP(**small).camera_fallback is None
    monkeypatch.setenv(CAMERA_FALLBACK_ENV, 'mean')
    sd = make_released_state_dict(seed=6, num_cameras=6, layers=1)
    model, clips = _loaded(sd, depth=1), _clips(2, 2, seed=7)
    assert model.camera_fallback == 'mean'
    with torch.no_grad():
        got = model(clips)
        ref = released_forward({**sd, 'cv_embed': sd['cv_embed'].mean(0, keepdim=True)}, clips,
                               torch.zeros(2, dtype=torch.long))
        assert _rel_err(got, ref) <= 1e-5
        assert _rel_err(model(clips, torch.tensor([5, 2])), released_forward(sd, clips, torch.tensor([5, 2]))) <= 1e-5
    assert TFCLIP(camera_fallback=None, **small).camera_fallback is None
    # timm.create_model drops arguments that are None: 'none' says the same through it
    refusing = timm.create_model('tfclip_vit_b16', camera_fallback='none', **small).eval()
    assert refusing.camera_fallback is None
    with pytest.raises(ModelInputError, match='needs the camera id'):
        refusing(clips)
    monkeypatch.setenv(CAMERA_FALLBACK_ENV, 'median')
    with pytest.raises(ModelInputError, match="SINET_TIMM_CAMERA_FALLBACK='median'.*'mean'") as e:
        timm.create_model('tfclip_vit_b16', **small)
    assert '\n' not in str(e.value)
    assert TFCLIP(camera_fallback='mean', **small).camera_fallback == 'mean'  # not read when given


def test_a_crop_embeds_as_its_frame_repeated_and_inputs_are_checked():
    model = timm.create_model('tfclip_vit_b16', depth=1).eval()
    crops, cams = _clips(1, 2, seed=8)[:, 0], torch.tensor([3])
    with torch.no_grad():
        single = model(crops, cams)
        padded = model(crops[:, None].expand(-1, 8, -1, -1, -1), cams)  # the protocol's padding of one frame
    assert _rel_err(single, padded) <= 1e-5
    for x, what in ((torch.zeros(1, 2, 3, 224, 224), '256x128'), (torch.zeros(1, 2, 3, 256, 128, dtype=torch.uint8),
                    'float'), (torch.zeros(1, 3, 2, 256, 128), 'channels'), (torch.zeros(3, 256, 128), 'clips')):
        with pytest.raises(ModelInputError, match=what):
            model(x, torch.tensor([0]))


def test_bf16_autocast_and_timm_api():
    model = timm.create_model('tfclip_vit_b16', depth=1, num_classes=7).eval()
    clips, cams = _clips(2, 2, seed=9), torch.tensor([1, 4])
    with torch.no_grad():
        ref = model.forward_head(model.forward_features(clips, cams), pre_logits=True)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = model.forward_head(model.forward_features(clips, cams), pre_logits=True)
    assert torch.isfinite(low).all()
    assert nn.functional.cosine_similarity(low.float(), ref).min() > 0.99
    assert model(clips, cams).shape == (2, 7) and ref.shape == (2, model.num_features) == (2, 2048)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)
    data = timm.data.resolve_data_config({}, model=model)
    assert data['input_size'] == (3, 256, 128) and data['interpolation'] == 'bilinear'
    assert data['mean'] == (0.485, 0.456, 0.406)  # the released test transform (its config's 0.5 is unused)


def test_zoo_tags_carry_protocol_and_cameras():
    assert timm.get_pretrained_cfg('tfclip_vit_b16').tag == 'mars'  # the default tag
    for tag, cams in (('mars', 6), ('lsvid', 15), ('ilidsvid', 2)):
        cfg = timm.get_pretrained_cfg(f'tfclip_vit_b16.{tag}')
        assert (cfg.protocol, cfg.camera_input, cfg.num_cameras, cfg.num_classes) == ('tfclip', True, cams, 0)
        assert cfg.input_size == (3, 256, 128) and cfg.license == 'mit' and cfg.hf_hub_id


def test_sinet_convert_makes_a_local_dir_folder(tmp_path, capsys):
    from sinet_cli.convert import main

    src = tmp_path / 'best_model.pth.tar'
    sd = save_released_checkpoint(src, seed=10, num_cameras=2, num_classes=150, layers=1)
    # a one-block ViT stands in for the released 12 (the converter reads the depth from the file)
    out = tmp_path / 'out'
    assert main([str(src), str(out), '--dataset', 'ilidsvid']) == 0
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['architecture'] == 'tfclip_vit_b16' and cfg['num_classes'] == 0
    assert cfg['model_args']['num_cameras'] == 2 and cfg['reid']['num_train_identities'] == 150
    assert cfg['pretrained_cfg']['protocol'] == 'tfclip' and cfg['reid']['frames_per_clip'] == 8
    reid = cfg['reid']
    assert reid['protocol'].startswith('tfclip: every frame') and 'model(x, camids)' in reid['input_layout']
    model = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    clips, cams = _clips(1, 2, seed=11), torch.tensor([1])
    with torch.no_grad():
        assert _rel_err(model(clips, cams), released_forward(sd, clips, cams)) <= 1e-5
    # fine-tuning: a new classifier on the loaded embedding (the strict load lets only the head be missing)
    tuned = timm.create_model(f'local-dir:{out}', pretrained=True, num_classes=7).eval()
    with torch.no_grad():
        assert tuned(clips, cams).shape == (1, 7)
        assert _rel_err(tuned.forward_head(tuned.forward_features(clips, cams), pre_logits=True),
                        model(clips, cams)) <= 1e-6
    assert 'tfclip_vit_b16' in capsys.readouterr().out


def test_sinet_hub_convert_checks_the_file_against_the_zoo_entry(tmp_path, capsys):
    from sinet_cli.hub import main

    src = tmp_path / 'best_model.pth.tar'
    save_released_checkpoint(src, seed=12, num_cameras=2, num_classes=150, layers=1)
    out = tmp_path / 'ilids'
    assert main(['convert', 'tfclip_vit_b16.ilidsvid', '--src', str(src), '--out', str(out)]) == 0
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['pretrained_cfg']['tag'] == 'ilidsvid' and cfg['pretrained_cfg']['num_cameras'] == 2
    assert cfg['reid']['zoo_entry'] == 'tfclip_vit_b16.ilidsvid' and cfg['reid']['protocol_name'] == 'tfclip'
    assert timm.create_model(f'local-dir:{out}', pretrained=True).num_cameras == 2
    capsys.readouterr()
    # MARS's file (6 cameras, 625 identities) under the iLIDS-VID entry: one line, exit 2
    mars = tmp_path / 'mars.pth.tar'
    save_released_checkpoint(mars, seed=13, num_cameras=6, num_classes=150, layers=1)
    assert main(['convert', 'tfclip_vit_b16.ilidsvid', '--src', str(mars), '--out', str(tmp_path / 'x')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and '6 camera embeddings, expected 2' in err[0]


def test_family_entry_inference_and_model_card():
    """TF-CLIP is a family of the registry: its checkpoints are recognised, its hooks found, its card camera-aware."""
    from sinet_timm import hub
    from sinet_timm._zoo import zoo_entries
    from sinet_timm.archs import TRAINABLE, family_of
    from sinet_timm.convert import family_module, infer_arch, train_identities

    fam = family_of('tfclip_vit_b16')
    assert (fam.name, fam.protocol, fam.trainable, fam.paper_ref) == ('tfclip', 'tfclip', False, 'Yu et al., AAAI 2024')
    assert fam.code_url == 'https://github.com/AsuradaYuci/TF-CLIP' and 'tfclip_vit_b16' not in TRAINABLE
    assert family_module('tfclip_vit_b16').__name__ == family_module(fam).__name__ == 'sinet_timm.tfclip'
    sd = make_released_state_dict(seed=2, num_cameras=15, num_classes=842, layers=1, module_prefix=True)
    assert infer_arch(sd) == 'tfclip_vit_b16' and train_identities(sd) == 842
    card = hub.card_text(zoo_entries()['tfclip_vit_b16.mars'])
    assert 'model(clips, camids)' in card and 'in 0..5' in card and "camera_fallback = 'mean'" in card
    assert 'training-only and are not kept' in card and 'kept for\nfine-tuning' not in card
    assert 'on every dataset' in card and fam.code_url in card and '@inproceedings{yu2024tfclip' in card


def _small_tfclip(num_cameras: int = 6) -> TFCLIP:
    torch.manual_seed(0)
    return timm.create_model('tfclip_vit_b16', depth=1, embed_dim=64, num_heads=2, proj_dim=32,
                             num_cameras=num_cameras)


def test_forward_features_are_per_frame_embeddings_that_forward_head_averages():
    """timm's split: forward_features gives (B, T, num_features) per-frame embeddings ((B, num_features) for crops),
    forward_head their frame mean (pre_logits, num_classes=0) or a classifier's logits on it."""
    model = _small_tfclip().eval()  # embed_dim 64, proj_dim 32: 2 * 64 + 32 = 160 features
    assert model.num_features == model.head_hidden_size == 160
    clips, cams = _clips(2, 3, seed=14), torch.tensor([1, 4])
    with torch.no_grad():
        frames = model.forward_features(clips, cams)
        assert frames.shape == (2, 3, 160)
        emb = model.forward_head(frames, pre_logits=True)
        torch.testing.assert_close(emb, frames.mean(dim=1), rtol=0, atol=0)
        torch.testing.assert_close(model(clips, cams), emb, rtol=0, atol=0)
        crops = model.forward_features(clips[:, 0], cams)  # a crop is a one-frame clip
        assert crops.shape == (2, 160) and model.forward_head(crops, pre_logits=True).shape == (2, 160)
        torch.testing.assert_close(crops, model.forward_features(clips[:, :1], cams)[:, 0], rtol=0, atol=0)
        model.reset_classifier(5)
        logits = model.forward_head(frames)
        assert logits.shape == (2, 5)
        torch.testing.assert_close(logits, model.head(emb), rtol=0, atol=0)
        torch.testing.assert_close(model(clips, cams), logits, rtol=0, atol=0)


def test_forward_intermediates_and_features_only():
    """timm's features API over the ViT blocks: per-frame maps (NCHW) or tokens (NLC) with the camera applied as in
    forward; the last block's tokens after ln_post are the ones forward reads; features_only wraps it."""
    small = dict(depth=3, embed_dim=64, num_heads=2, proj_dim=32)
    torch.manual_seed(0)
    model = timm.create_model('tfclip_vit_b16', **small).eval()
    assert [f['module'] for f in model.feature_info] == [f'image_encoder.blocks.{i}' for i in range(3)]
    assert {(f['num_chs'], f['reduction']) for f in model.feature_info} == {(64, 16)}
    clips, cams = _clips(2, 3, seed=17), torch.tensor([0, 5])
    seen = []
    hook = model.image_encoder.norm.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        model(clips, cams)
        hook.remove()
        tokens = seen[0].unflatten(0, (2, 3))  # (B, T, 1 + 16*8, C): the forward path's tokens after ln_post
        final, maps = model.forward_intermediates(clips, camids=cams)
        torch.testing.assert_close(final, model.forward_features(clips, cams), rtol=0, atol=0)
        assert [m.shape for m in maps] == [(2, 3, 64, 16, 8)] * 3
        (last, cls), = model.forward_intermediates(clips, [-1], True, True, output_fmt='NLC', intermediates_only=True,
                                                    camids=cams)
        torch.testing.assert_close(last, tokens[:, :, 1:], rtol=0, atol=0)
        torch.testing.assert_close(cls, tokens[:, :, :1], rtol=0, atol=0)
        normed = model.forward_intermediates(clips, 1, norm=True, intermediates_only=True, camids=cams)[0]
        as_maps = tokens[:, :, 1:].unflatten(2, (16, 8)).permute(0, 1, 4, 2, 3)  # (B, T, C, h, w)
        torch.testing.assert_close(normed, as_maps, rtol=0, atol=0)
        early = model.forward_intermediates(clips, [0], stop_early=True, intermediates_only=True, camids=cams)
        torch.testing.assert_close(early[0], maps[0], rtol=0, atol=0)
        other = model.forward_intermediates(clips, [0], intermediates_only=True, camids=torch.tensor([1, 5]))
        assert not torch.allclose(other[0][0], maps[0][0]) and torch.equal(other[0][1], maps[0][1])
        crop_final, crop_maps = model.forward_intermediates(clips[:, 0], camids=cams)
        assert crop_final.shape == (2, 160) and [m.shape for m in crop_maps] == [(2, 64, 16, 8)] * 3
        torch.testing.assert_close(crop_maps[-1], model.forward_intermediates(clips[:, :1], camids=cams)[1][-1][:, 0],
                                   rtol=0, atol=0)
    with pytest.raises(ModelInputError, match='needs the camera id'):
        model.forward_intermediates(clips)
    with pytest.raises(ValueError, match="'NCHW' or 'NLC'"):
        model.forward_intermediates(clips, output_fmt='NHWC', camids=cams)
    # features_only: timm's FeatureGetterNet; the blocks after the last tap, ln_post and the classifier are pruned
    torch.manual_seed(0)
    features = timm.create_model('tfclip_vit_b16', features_only=True, out_indices=(0, 1), camera_fallback='mean',
                                 num_classes=5, **small).eval()
    assert features.feature_info.channels() == [64, 64] and features.feature_info.reduction() == [16, 16]
    pruned = features.model
    assert len(pruned.image_encoder.blocks) == 2 and isinstance(pruned.image_encoder.norm, nn.Identity)
    assert pruned.num_classes == 0
    model.camera_fallback = 'mean'
    with torch.no_grad():
        got = features(clips[:, 0])
        want = model.forward_intermediates(clips[:, 0], (0, 1), intermediates_only=True)
    assert [g.shape for g in got] == [(2, 64, 16, 8)] * 2
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    default = timm.create_model('tfclip_vit_b16', features_only=True, device='meta')  # the last 3 blocks, as ViTs
    assert default.feature_info.module_name() == [f'image_encoder.blocks.{i}' for i in (9, 10, 11)]


def _fx(model: nn.Module) -> nn.Module:
    """The model traced as timm's tests trace it (timm's leaf modules and functions), returning its output."""
    train_nodes, eval_nodes = get_graph_node_names(model)
    assert train_nodes[-1] == eval_nodes[-1]
    return create_feature_extractor(model, [eval_nodes[-1]])


@pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated:FutureWarning')
def test_torch_fx_and_torchscript_compute_what_eager_does():
    """torch.fx (the input checks and the camera lookup are leaves) and TorchScript, for clips and crops, with camera
    ids, without (the fallback is read when the graph is made) and refusing; fx backward reaches every parameter."""
    with set_scriptable(True):
        model = _small_tfclip().eval()
    clips, cams = _clips(2, 3, seed=16), torch.tensor([1, 4])
    crops = clips[:, 0]
    traced = _fx(model)
    scripted = torch.jit.script(model)
    scripted_fx = torch.jit.script(_fx(model))
    with torch.no_grad():
        for args in ((clips, cams), (crops, cams)):
            ref = model(*args)
            for got in (next(iter(traced(*args).values())), scripted(*args), next(iter(scripted_fx(*args).values()))):
                torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
        with pytest.raises(Exception, match='needs the camera id of each clip'):
            scripted(clips)
        with pytest.raises(ModelInputError, match='needs the camera id of each clip'):
            traced(clips)
        model.camera_fallback = 'mean'
        mean = model(clips)
        torch.testing.assert_close(next(iter(_fx(model)(clips).values())), mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(torch.jit.script(model)(clips), mean, rtol=1e-6, atol=1e-6)
    with pytest.raises(Exception, match='out of range'):  # eager checks still run in the traced graph
        traced(clips, torch.tensor([0, 6]))
    model.reset_classifier(3)
    train = _fx(model.train()).train()
    next(iter(train(clips).values())).mean().backward()
    assert [n for n, p in train.named_parameters() if p.grad is None] == []


def test_viz_cam_says_tfclip_has_no_maps():
    """sinet-viz cam draws forward_features maps; TF-CLIP's are per-frame embeddings: one clear error."""
    model = _small_tfclip().eval()
    model.camera_fallback = 'mean'
    with pytest.raises(VizError, match=r'TFCLIP gives no per-frame maps .*\(4, 160\)'):
        activation_maps(model, _clips(1, 4, seed=15))


def test_evaluate_synthetic_under_the_tfclip_protocol_with_cameras_and_the_mean_fallback():
    """reid_eval runs a TF-CLIP model (a one-block ViT) on the synthetic MARS set (6 cameras) under its own
    protocol: with each tracklet's camera id, and with the mean camera embedding; the rankings differ, so the ids
    reach the model. A model with fewer cameras than the data is refused unless the fallback is asked for."""
    kw = dict(cache=False, progress=False, workers=0)
    with_ids = reid_eval.evaluate(_small_tfclip(), 'synthetic', **kw)
    mean = reid_eval.evaluate(_small_tfclip(), 'synthetic', camera_fallback='mean', **kw)
    for r in (with_ids, mean):
        assert r.protocol.startswith('tfclip: consecutive 8-frame clips') and r.gallery_rule['query_added']
        assert 0 < r.metrics['mAP'] <= 100
    assert abs(with_ids.metrics['mAP'] - mean.metrics['mAP']) > 1.0
    with pytest.raises(EvalError, match='embeddings for 2 cameras.*--camera-fallback mean'):
        reid_eval.evaluate(_small_tfclip(num_cameras=2), 'synthetic', **kw)


def test_reid_eval_does_not_follow_the_environment_fallback(monkeypatch):
    """With $SINET_TIMM_CAMERA_FALLBACK=mean (the model itself would take model(x)), reid_eval still passes camera
    ids, refuses tracklets without them and data with more cameras than the model has, unless its own
    camera_fallback='mean' option is given."""
    monkeypatch.setenv(CAMERA_FALLBACK_ENV, 'mean')
    assert _small_tfclip().camera_fallback == 'mean'
    data = reid_eval.load_dataset('mars', demo_dataset_root())
    tracks = [reid_eval.InputTracklet(f't{i}', list(p)[:4]) for i, (p, _, _) in enumerate(data.gallery[:2])]
    kw = dict(workers=0, progress=False, device='cpu')
    with pytest.raises(EvalError, match='takes camera ids and 2 of 2 tracklets have none.*--camera-fallback mean'):
        reid_eval.extract(_small_tfclip(), tracks, **kw)
    with_ids = reid_eval.extract(_small_tfclip(), tracks, camids=[0, 3], **kw)
    mean = reid_eval.extract(_small_tfclip(), tracks, camera_fallback='mean', **kw)
    assert with_ids.shape == mean.shape == (2, 160) and not torch.allclose(with_ids, mean)
    with pytest.raises(EvalError, match='embeddings for 2 cameras.*--camera-fallback mean'):
        reid_eval.evaluate(_small_tfclip(num_cameras=2), 'synthetic', cache=False, progress=False, workers=0)


@pytest.mark.slow
@pytest.mark.heavy  # two full ViT-B/16 evaluations: 8 minutes or more, the longest test by far
def test_evaluate_the_full_model_by_name_on_synthetic():
    """The registered ViT-B/16 by name, random weights (about 4 minutes a run on 2 CPU cores): the measurement
    quoted in the README (seed 0: mAP 8.2 with camera ids, 30.0 with the mean fallback)."""
    kw = dict(pretrained=False, seed=0, cache=False, progress=False, workers=0)
    with_ids = reid_eval.evaluate('tfclip_vit_b16', 'synthetic', **kw)
    mean = reid_eval.evaluate('tfclip_vit_b16', 'synthetic', camera_fallback='mean', **kw)
    assert with_ids.protocol.startswith('tfclip') and mean.protocol.startswith('tfclip')
    assert with_ids.metrics['mAP'] == pytest.approx(8.15, abs=0.5)
    assert mean.metrics['mAP'] == pytest.approx(30.01, abs=0.5)


@pytest.mark.slow  # an ONNX export and check of a one-block ViT with 8 frames: about 30 s
def test_onnx_export_takes_the_camera_id_as_a_second_input(tmp_path):
    model = timm.create_model('tfclip_vit_b16', depth=1, num_cameras=6).eval()
    report = export_onnx(model, tmp_path / 't.onnx', frames=8)
    assert report.camera_input and json.loads(report.metadata['inputs']) == ['clips', 'camids']
    assert json.loads(report.metadata['protocol']) == 'tfclip' and json.loads(report.metadata['num_cameras']) == 6
    assert report.max_abs_diff <= report.tolerance * report.scale
