"""The SINet family as timm models: registry, shapes, timm API, compile/export/script, errors."""
from __future__ import annotations

import copy

import pytest
import timm
import torch

from sinet_timm import SINet, SINetOutput
from sinet_timm.sinet import IntegrationDistribution

ARCH_PARAMS = {  # released implementation, parameters without classifier/projection
    'sinet_r50': 26_263_313,
    'sbnet_r50': 25_143_121,
    'idnet_r50': 24_658_880,
    'vreid_r50': 23_538_688,
    'sanet_r50': 23_804_160,  # the baseline + 2 SA blocks of 132,736
}


def _params_wo_head(m: torch.nn.Module) -> int:
    return sum(p.numel() for k, p in m.named_parameters() if not k.startswith(('classifier.', 'projection.')))


def test_registered_models_and_zoo():
    assert set(ARCH_PARAMS) <= set(timm.list_models('*_r50'))
    pretrained = set(timm.list_pretrained('s*net_r50*')) | set(timm.list_pretrained('idnet_r50*'))
    for arch in ('sinet_r50', 'sbnet_r50', 'idnet_r50'):
        assert {f'{arch}.mars', f'{arch}.lsvid', f'{arch}.tv_in1k'} <= pretrained
    cfg = timm.get_pretrained_cfg('sinet_r50.mars')
    assert cfg.num_classes == 625 and cfg.hf_hub_id.endswith('/sinet_r50.mars')
    # SANet: MARS only in the release (no LS-VID checkpoint)
    assert set(timm.list_pretrained('sanet_r50*')) == {'sanet_r50.mars', 'sanet_r50.tv_in1k'}
    cfg = timm.get_pretrained_cfg('sanet_r50.mars')
    assert cfg.num_classes == 625 and cfg.hf_hub_id.endswith('/sanet_r50.mars') and 'TCSVT' in cfg.paper_ids
    # the untagged name defaults to the ImageNet backbone init, like the authors' training
    assert timm.get_pretrained_cfg('sinet_r50').hf_hub_id == 'timm/resnet50.tv_in1k'


@pytest.mark.parametrize('arch', list(ARCH_PARAMS))
def test_param_counts_match_released(arch):
    m = timm.create_model(arch, num_classes=625)
    assert _params_wo_head(m) == ARCH_PARAMS[arch]
    assert (m.projection is not None) == (arch in ('sinet_r50', 'sbnet_r50'))


@pytest.mark.parametrize('arch', list(ARCH_PARAMS))
def test_eval_embedding_and_clip_averaging(arch, clip):
    m = timm.create_model(arch).eval()
    with torch.no_grad():
        emb = m(clip)
        assert emb.shape == (2, 2048) and torch.isfinite(emb).all()
        # an 8-frame input is two independent 4-frame clips whose embeddings are averaged; in float64, so that
        # batch-size dependent rounding cannot flip SBM's hard centrality threshold
        m, c = m.double(), clip[:1].double()
        two = torch.cat([c, c.flip(1)], dim=1)
        torch.testing.assert_close(m(two), (m(c) + m(c.flip(1))) / 2, atol=1e-9, rtol=1e-9)


def test_sbm_is_temporal(clip):
    """SBM mixes frames: permuting the frames of a clip changes the embedding (the baseline does not care)."""
    sb = timm.create_model('sbnet_r50').eval()
    base = timm.create_model('vreid_r50').eval()
    perm = clip[:, [2, 0, 3, 1]]
    with torch.no_grad():
        assert (sb(clip) - sb(perm)).abs().max() > 1e-3
        torch.testing.assert_close(base(clip), base(perm), atol=1e-4, rtol=1e-4)


def test_idm_is_temporal(clip):
    m = timm.create_model('idnet_r50').eval()
    for blk in m.layer2:  # the released init zeroes IDM's expansion; give it weight so it acts
        if hasattr(blk, 'expand'):
            torch.nn.init.normal_(blk.expand.weight, std=0.05)
    with torch.no_grad():
        assert (m(clip) - m(clip[:, [3, 2, 1, 0]])).abs().max() > 1e-3


def test_timm_api(clip):
    m = timm.create_model('sinet_r50', num_classes=10).eval()
    with torch.no_grad():
        feats = m.forward_features(clip)
        assert feats.shape == (2, 4, 2048, 16, 8)
        emb = m.forward_head(feats, pre_logits=True)
        logits = m.forward_head(feats)
        assert emb.shape == (2, 2048) and logits.shape == (2, 10)
        torch.testing.assert_close(logits, m(clip))
        torch.testing.assert_close(m.get_classifier()(emb), logits)
    m.reset_classifier(0)
    assert m.num_classes == 0 and m.projection is None
    with torch.no_grad():
        torch.testing.assert_close(m(clip), emb)
    m.reset_classifier(7)
    assert m.classifier.out_features == 7 and m.projection is not None
    assert m.group_matcher()['blocks'] == r'^layer(\d+)\.(\d+)'


def test_data_config_is_per_frame_reid_preprocessing():
    m = timm.create_model('sinet_r50')
    cfg = timm.data.resolve_data_config({}, model=m)
    assert cfg['input_size'] == (3, 256, 128)
    assert cfg['interpolation'] == 'bicubic'
    assert cfg['mean'] == (0.485, 0.456, 0.406) and cfg['std'] == (0.229, 0.224, 0.225)
    t = timm.data.create_transform(**cfg)
    import numpy as np
    from PIL import Image
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (97, 45, 3), dtype=np.uint8))
    out = t(img)
    assert out.shape == (3, 256, 128)  # squashed to 256x128, no crop
    # exactly the released preprocessing: PIL bicubic resize to 128x256, ToTensor, ImageNet normalisation
    ref = torch.from_numpy(np.asarray(img.resize((128, 256), Image.BICUBIC), dtype=np.float32) / 255)
    ref = (ref.permute(2, 0, 1) - torch.tensor(cfg['mean'])[:, None, None]) / torch.tensor(cfg['std'])[:, None, None]
    torch.testing.assert_close(out, ref)


def test_train_mode_outputs_for_the_losses():
    m = timm.create_model('sinet_r50', num_classes=5).train()
    x = torch.randn(4, 4, 3, 256, 128)
    out = m(x)
    assert isinstance(out, SINetOutput)
    assert out.logits.shape == (4, 5) and out.embedding.shape == (4, 2048)
    assert out.frame_features.shape == (4, 4, 2048)
    loss = out.logits.logsumexp(1).mean() + out.frame_features.pow(2).mean()
    loss.backward()
    assert m.layer3[2].kgm_conv.weight.grad is not None  # gradients reach the SBM
    assert m.projection.weight.grad.abs().sum() > 0
    idn = timm.create_model('idnet_r50', num_classes=5).train()
    assert idn(x).frame_features is None  # no frame loss in the released IDNet training


@pytest.mark.slow  # 13-20 s in CI: out of the default run (under 5 minutes)
def test_grad_checkpointing_same_result():
    torch.manual_seed(0)
    m = timm.create_model('sinet_r50', num_classes=3).train()
    x = torch.randn(4, 4, 3, 256, 128)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    out = m(x).logits.sum()
    out.backward()
    g = m.layer2[2].integrate.weight.grad.clone()
    m.load_state_dict(state)
    m.zero_grad()
    m.set_grad_checkpointing(True)
    out2 = m(x).logits.sum()
    out2.backward()
    torch.testing.assert_close(out2, out)
    torch.testing.assert_close(m.layer2[2].integrate.weight.grad, g)


@pytest.fixture(scope='module')
def eval_model():
    return timm.create_model('sinet_r50').eval()


def test_torch_export(eval_model, clip):
    with torch.no_grad():
        ref = eval_model(clip)
        ep = torch.export.export(eval_model, (clip,))
        torch.testing.assert_close(ep.module()(clip), ref)


def test_torchscript(eval_model, clip):
    with torch.no_grad():
        ref = eval_model(clip)
        scripted = torch.jit.script(eval_model)
        torch.testing.assert_close(scripted(clip), ref)
        with pytest.raises(Exception, match='multiple of 4'):
            scripted(clip[:, :3])


def test_torch_compile_fullgraph(eval_model, clip):
    """Dynamo captures the whole model without graph breaks (eager backend: fast on a CPU-only CI)."""
    torch._dynamo.reset()
    compiled = torch.compile(eval_model, fullgraph=True, backend='eager')
    with torch.no_grad():
        torch.testing.assert_close(compiled(clip), eval_model(clip))


def test_clear_input_errors(clip):
    m = timm.create_model('sinet_r50').eval()
    with pytest.raises(ValueError, match=r'T=3 must be a positive multiple of 4'):
        m(clip[:, :3])
    with pytest.raises(ValueError, match=r'T=0 must be a positive multiple of 4'):  # was a (B, 2048) of NaN
        m(clip[:, :0])
    with pytest.raises(TypeError, match=r'expected float frames .* got torch.uint8\. Convert uint8 frames'):
        m(clip.to(torch.uint8))
    # SBM compares the inner (H-2)x(W-2) positions of its layer3 maps with all of them: 64x32 frames give 4x2
    # maps (released: 0/0, every CAL weight 0); tiny frames used to fail deep in torch
    with pytest.raises(ValueError, match=r'64x32 frames are too small: SBM needs layer3 feature maps of at least '
                                         r'3x3, i\.e\. frames of at least 37x37\. Resize frames to \(256, 128\)'):
        timm.create_model('sbnet_r50').eval()(torch.randn(1, 4, 3, 64, 32))
    with pytest.raises(ValueError, match=r"8x4 frames are too small: the stem's max-pool needs frames of at least "
                                         r'5x5'):
        timm.create_model('vreid_r50').eval()(torch.randn(1, 4, 3, 8, 4))
    with pytest.raises(ValueError, match=r'img_size=\(64, 32\) is too small: SBM needs'):
        timm.create_model('sinet_r50', img_size=(64, 32))
    with pytest.raises(ValueError, match=r'IDM modules sized for 256x128.*got 128x64'):
        m(torch.randn(1, 4, 3, 128, 64))
    with pytest.raises(ValueError, match=r'clips \(B, T, 3, H, W\) or crops \(B, 3, H, W\); got a 3-D'):
        m(clip[0, 0])
    with pytest.raises(ValueError, match=r'transpose'):
        m(clip.transpose(1, 2))
    # models without IDM accept other frame sizes; IDM models can be built for them
    with torch.no_grad():
        assert timm.create_model('sbnet_r50').eval()(torch.randn(1, 4, 3, 128, 64)).shape == (1, 2048)
        assert timm.create_model('sbnet_r50').eval()(torch.randn(1, 4, 3, 37, 37)).shape == (1, 2048)
        assert timm.create_model('vreid_r50').eval()(torch.randn(1, 4, 3, 5, 5)).shape == (1, 2048)
        assert timm.create_model('sinet_r50', img_size=(128, 64)).eval()(torch.randn(1, 4, 3, 128, 64)).shape == (
            1, 2048)


def test_paper_idm_variant():
    released = timm.create_model('idnet_r50')
    paper = timm.create_model('idnet_r50', idm_reduction=4)
    assert released.layer2[2].integrate.out_channels == 2048 // 16
    assert paper.layer2[2].integrate.out_channels == 2048 // 4
    assert _params_wo_head(paper) > _params_wo_head(released)


def test_model_class_is_exported():
    assert isinstance(timm.create_model('vreid_r50'), SINet)


def test_sbm_fast_paths_equal_the_plain_computation():
    """Folding CAL into the kernels (non-negative input), writing CPM in place and the channels_last
    formulation change no result beyond float32 rounding (checked against the plain computation in float64)."""
    torch.manual_seed(0)
    sbm = timm.create_model('sbnet_r50').layer3[5].eval()
    assert sbm.inplace  # SINet's SBMs write into their input at inference
    sbm.inplace = False
    x = torch.relu(torch.randn(8, 1024, 16, 8))  # two 4-frame clips, post-ReLU as inside the model
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fast = sbm(x)  # nonneg_input=True, CPM written into a new buffer
        fast_cl = sbm(x_cl)
        sbm.nonneg_input = False
        plain = sbm(x)
        truth = copy.deepcopy(sbm).double()(x.double()).float()
        sbm.nonneg_input = True
    with torch.enable_grad():
        graph = sbm(x.clone().requires_grad_())  # the torch.cat path used for training
        graph_cl = sbm(x_cl.clone().requires_grad_())
    # the suppression's softmax/exp amplify float32 rounding to ~5e-5 on outputs of magnitude ~4
    for out in (fast, fast_cl, plain, graph.detach(), graph_cl.detach()):
        torch.testing.assert_close(out, truth, atol=2e-4, rtol=1e-5)
    torch.testing.assert_close(graph.detach(), fast, atol=1e-6, rtol=1e-6)  # same formulation, same numbers
    assert fast.is_contiguous() and graph.is_contiguous()  # each output keeps its input's memory format
    assert fast_cl.is_contiguous(memory_format=torch.channels_last)
    assert graph_cl.is_contiguous(memory_format=torch.channels_last)
    assert (fast - x).abs().max() > 1e-3  # the module does something
    # inplace=True: at inference the output is the input's memory, with the same values; with autograd it is not
    sbm.inplace = True
    for inp, ref in ((x.clone(), fast), (x_cl.clone(), fast_cl)):
        with torch.no_grad():
            out = sbm(inp)
        assert out.data_ptr() == inp.data_ptr() and out.stride() == inp.stride()
        torch.testing.assert_close(out, ref, atol=0, rtol=0)
    kept = x.clone().requires_grad_()
    with torch.enable_grad():
        assert sbm(kept).data_ptr() != kept.data_ptr()
    torch.testing.assert_close(kept.detach(), x, atol=0, rtol=0)


@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.gpu)])
def test_inference_paths_on_device_match_float64(device):
    """What sinet-eval runs (channels_last, in-place SBM outputs; bf16 autocast and inductor on CUDA) gives the
    float64 embedding up to float32 rounding, and bf16 keeps the embedding's direction."""
    from reid_eval.models import for_inference

    torch.manual_seed(0)
    m = timm.create_model('sinet_r50', img_size=(128, 64)).eval()
    for idm in m.modules():  # zero-initialised expand: give IDM something to do
        if isinstance(idm, IntegrationDistribution):
            torch.nn.init.normal_(idm.expand.weight, std=0.05)
    clips = torch.rand(3, 8, 3, 128, 64) * 4 - 2  # 3 tracklets x 2 clips
    with torch.no_grad():
        truth = copy.deepcopy(m).double()(clips.double())
    dev = torch.device(device)
    fast = for_inference(m, dev)
    x = clips.to(dev)
    with torch.inference_mode():
        out = fast(x).double().cpu()
        amp_dtype = torch.bfloat16 if dev.type == 'cuda' or torch.backends.mkldnn.is_available() else None
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            low = fast(x).double().cpu()
        compiled = None
        if dev.type == 'cuda':  # inductor: minutes of compilation on a 2-core CPU, seconds on a GPU box
            torch._dynamo.reset()
            compiled = torch.compile(fast)(x).double().cpu()
    scale = truth.abs().max()
    assert scale > 1
    tol = (2e-3 if dev.type == 'cuda' else 2e-5) * scale  # cuDNN runs float32 convs in TF32 by default
    torch.testing.assert_close(out, truth, atol=tol, rtol=0)
    if compiled is not None:
        torch.testing.assert_close(compiled, truth, atol=tol, rtol=0)
    if amp_dtype is not None:
        assert torch.nn.functional.cosine_similarity(low, truth).min() > 0.999
        assert (low - out).abs().max() > 0  # the autocast path really ran in bf16


def _low_precision_outputs(m: torch.nn.Module, x: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
    """The embeddings of ``x`` in float16 and bfloat16: autocast and the model cast with .half()/.bfloat16()."""
    out = {}
    m, x = m.to(device), x.to(device)
    with torch.no_grad():
        for name, dtype in (('fp16', torch.float16), ('bf16', torch.bfloat16)):
            with torch.autocast(device.type, dtype=dtype):
                out[f'autocast {name}'] = m(x).float()
            out[f'{name} weights'] = copy.deepcopy(m).to(dtype)(x.to(dtype)).float()
    return out


# float16 convolutions are slow on CPUs (100 s in CI): a GPU test, run on the CPU by hand with -m heavy
@pytest.mark.parametrize('device', [pytest.param('cpu', marks=[pytest.mark.slow, pytest.mark.heavy]),
                                    pytest.param('cuda', marks=pytest.mark.gpu)])
def test_float16_and_bfloat16_are_finite_and_close(device):
    """SBM's epsilons (1e-8, 1e-12) underflow in float16 and its KGM normalisation divided 0 by 0 (every embedding
    NaN under fp16 autocast or .half()); its attention now runs in float32 inside low-precision models. All four
    architectures (random weights, 128x64 frames) and SINet with released-format weights (256x128) give finite
    embeddings within cosine 0.999 of float32."""
    from released_reference import make_released_state_dict

    from sinet_timm import checkpoint_filter_fn

    dev = torch.device(device)
    cases = [(arch, None, (128, 64)) for arch in ('sinet_r50', 'sbnet_r50', 'idnet_r50', 'vreid_r50')]
    cases.append(('sinet_r50', 'sinet', (256, 128)))
    for arch, released, size in cases:
        torch.manual_seed(0)
        m = timm.create_model(arch, img_size=size).eval()
        if released:
            m.load_state_dict(checkpoint_filter_fn(
                make_released_state_dict(released, num_classes=0, with_projection=False), m))
        x = torch.randn(1, 4, 3, *size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            ref = m.to(dev)(x.to(dev)).float()
        for name, y in _low_precision_outputs(m, x, dev).items():
            assert torch.isfinite(y).all(), (arch, released, name)
            assert torch.nn.functional.cosine_similarity(y, ref).min() >= 0.999, (arch, released, name)


@pytest.mark.parametrize('arch', ['sinet_r50', 'sbnet_r50', 'sanet_r50'])
def test_single_crops_are_one_frame_tracklets(arch):
    """A (B, 3, H, W) batch is a batch of one-frame tracklets, embedded as the dense protocol embeds one (the frame
    loop-padded into a 4-frame clip): model(x) == model(x[:, None]) == the explicit 4-frame clip."""
    torch.manual_seed(0)
    m = timm.create_model(arch).eval()
    x = torch.randn(3, 3, 256, 128)
    with torch.no_grad():
        crops, one_frame = m(x), m(x[:, None])
        clip = m(x[:, None].repeat(1, 4, 1, 1, 1))
    torch.testing.assert_close(crops, clip, rtol=0, atol=0)
    torch.testing.assert_close(one_frame, clip, rtol=0, atol=0)
    # what timm's tooling sees: NCHW maps of the pool size, and the head's embedding width
    feats = m.forward_features(x)
    assert feats.shape == (3, 2048, 16, 8) and m.forward_head(feats, pre_logits=True).shape == (3, 2048)


def test_features_only_and_forward_intermediates():
    """features_only (timm's FeatureGetterNet over forward_intermediates): stem + 4 stages, NCHW for crops,
    per frame for clips; the temporal modules see the clip's frames together, so the clip's last stage equals
    forward_features."""
    torch.manual_seed(0)
    m = timm.create_model('sinet_r50').eval()
    fo = timm.create_model('sinet_r50', features_only=True, out_indices=(1, 2, 3, 4)).eval()
    fo.load_state_dict(m.state_dict(), strict=False)
    assert fo.feature_info.channels() == [256, 512, 1024, 2048] and fo.feature_info.reduction() == [4, 8, 16, 16]
    clip = torch.randn(2, 4, 3, 256, 128)
    with torch.no_grad():
        crops = fo(clip[:, 0])
        last, inter = m.forward_intermediates(clip)
        ref = m.forward_features(clip)
    assert [tuple(f.shape) for f in crops] == [(2, 256, 63, 31), (2, 512, 32, 16), (2, 1024, 16, 8),
                                               (2, 2048, 16, 8)]
    assert [tuple(f.shape[:3]) for f in inter] == [(2, 4, 64), (2, 4, 256), (2, 4, 512), (2, 4, 1024), (2, 4, 2048)]
    torch.testing.assert_close(last, ref) and torch.testing.assert_close(inter[-1], ref)
    # stage 2 (after IDM) of a clip differs between frames; of a crop it is the frames' average
    assert not torch.allclose(inter[2][:, 0], inter[2][:, 1])
    with torch.no_grad():
        _, crop_inter = m.forward_intermediates(clip[:, 0])
        crop_clip = m.forward_intermediates(clip[:, :1], intermediates_only=True)
    torch.testing.assert_close(crop_inter[2], crop_clip[2].mean(1))


def test_factory_device_dtype_and_unpooled_head():
    m = timm.create_model('sbnet_r50', device='meta', dtype=torch.bfloat16)
    assert {p.device.type for p in m.parameters()} == {'meta'} and {b.device.type for b in m.buffers()} == {'meta'}
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
    m.train()
    m.reset_classifier(7)
    assert m.classifier.weight.device.type == 'meta' and m.classifier.weight.dtype == torch.bfloat16
    assert m.classifier.training and m.projection.training
    u = timm.create_model('vreid_r50', num_classes=0, global_pool='').eval()
    x = torch.randn(1, 3, 128, 64)
    with torch.no_grad():
        assert u(x).shape == (1, 2048, 8, 4) and u(x[:, None]).shape == (1, 4, 2048, 8, 4)
    u.reset_classifier(3)  # a classifier brings the pooled head back
    assert u.global_pool == 'max' and u.eval()(x).shape == (1, 3)
    with pytest.raises(ValueError, match="global_pool='' \\(no head\\) has no classifier"):
        timm.create_model('vreid_r50', num_classes=5, global_pool='')
    with pytest.raises(ValueError, match="got global_pool='avg'"):
        timm.create_model('vreid_r50', global_pool='avg')


def test_train_mode_on_crops_returns_logits_with_every_parameter_used():
    """What generic timm training (and DDP without find_unused_parameters) needs from a batch of images."""
    m = timm.create_model('sinet_r50', num_classes=5, img_size=(128, 64)).train()
    out = m(torch.randn(4, 3, 128, 64))
    assert out.shape == (4, 5)
    out.mean().backward()
    assert all(p.grad is not None for p in m.parameters())
    assert isinstance(m(torch.randn(4, 4, 3, 128, 64)), SINetOutput)  # clips: what the losses need
