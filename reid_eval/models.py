"""The model side of an evaluation: any timm name, a released checkpoint, or a module of your own.

:func:`load_model` turns what the caller has into a :class:`LoadedModel`, a module that maps float clips
``(B, T, 3, H, W)`` to ``(B, D)`` embeddings, with where its weights come from and its per-frame preprocessing:

* a zoo / timm name (``sinet_r50.mars``, ``vreid_r50``), ``hf-hub:ORG/NAME`` or ``local-dir:FOLDER``;
* the authors' released ``.pth.tar`` (or a converted ``.safetensors``), architecture read from its keys;
* any ``torch.nn.Module`` that maps clips to embeddings;
* a timm *image* model (module or name, input ``(B, 3, H, W)``): every frame is embedded on its own and the frame
  embeddings are averaged over each clip (:class:`FrameAverage`), the standard video baseline; every output of the
  evaluation says so;
* an ONNX file written by ``sinet-export`` (``model.onnx``, ``model.int8.onnx``), run in onnxruntime
  (:class:`~reid_eval.onnx_model.OnnxModel`), its preprocessing and protocol read from the file's metadata.

The preprocessing comes from the model's pretrained cfg (``timm.data.resolve_data_config``) unless the caller
overrides it; a module without a pretrained cfg gets the family's re-ID preprocessing (256x128, bicubic, ImageNet
mean/std, no crop).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import json
import os
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import timm.data
import torch
import torch.nn as nn
from safetensors.torch import load_file

from sinet_timm._zoo import zoo_entries, zoo_problem
from sinet_timm.archs import ARCHITECTURES
from sinet_timm.convert import check_local_dir, load_released, mismatch_summary, nonfinite_tensors
from sinet_timm.errors import CheckpointError, SinetTimmError, WeightsUnavailableError
from sinet_timm.export import weights_sha256 as state_sha256
from sinet_timm.framewise import CLIP_LEN, VideoReIDNet, video_cfg
from sinet_timm.network import hub_or_cache

from .errors import EvalError, ModelOutputError
from .onnx_model import ONNX_SUFFIX, OnnxModel

__all__ = ['CHECKPOINT_SUFFIXES', 'FrameAverage', 'LoadedModel', 'MODEL_INPUTS', 'check_model_name', 'for_inference',
           'computation_key', 'is_video_model', 'load_model', 'takes_cameras', 'weights_sha256']

MODEL_INPUTS = ('auto', 'clips', 'frames')
CHECKPOINT_SUFFIXES = ('.pth', '.tar', '.pt', '.safetensors')
FRAMES_NOTE = 'image model: frame embeddings averaged over each clip'


class NonFiniteWeightsWarning(UserWarning):
    """A model's weights hold NaN or Inf values (checked once when it is loaded)."""


class FrameAverage(nn.Module):
    """A timm image model as a video re-ID model: each frame of a clip is embedded on its own and the frame
    embeddings are averaged (the standard video baseline). Input ``(B, T, 3, H, W)``, output ``(B, D)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.pretrained_cfg = getattr(model, 'pretrained_cfg', {})  # for timm.data.resolve_data_config
        self.num_features = getattr(model, 'num_features', None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise EvalError(f'FrameAverage expects clips (B, T, 3, H, W), got shape {list(x.shape)}')
        b, t = x.shape[:2]
        emb = self.model(x.flatten(0, 1))
        if emb.dim() != 2:
            raise EvalError(f'the image model returned a {emb.dim()}-D output of shape {list(emb.shape)} for a batch '
                            'of frames; expected (N, D) embeddings: create it with num_classes=0')
        return emb.unflatten(0, (b, t)).mean(dim=1)


@dataclass
class LoadedModel:
    """A model ready for the evaluation, with the facts every output reports."""

    module: nn.Module  # eval mode; maps float clips (B, T, 3, H, W) to (B, D)
    name: str  # as the caller named it ('sinet_r50.mars', a file, a class name)
    weights: str  # where the weights come from ('sinet_r50.mars', 'vreid_r50 (random init)', 'file:/x.pth.tar')
    architecture: str | None  # the registered architecture, when known
    input: str  # 'clips', or 'frames': an image model whose frame embeddings are averaged over each clip
    data_config: dict[str, Any] = field(default_factory=dict)  # timm data config of the per-frame preprocessing
    clip_len: int = CLIP_LEN
    random_weights: bool = False  # pretrained=False: numbers only show that the pipeline runs
    weights_finite: bool = True  # every floating-point weight is finite (checked once at load)
    zoo_entry: str | None = None  # the zoo entry whose weights these are ('vkd_r50.mars_base'), when known

    @property
    def input_note(self) -> str:
        """What every output says about how the model sees a clip ('' for video models)."""
        return FRAMES_NOTE if self.input == 'frames' else ''


def weights_sha256(model: nn.Module) -> str:
    """Content hash of a model's state dict (names, dtypes, shapes and values), whatever file it came from; a
    module whose weights are no torch tensors names its own (``weights_digest``: an ONNX file's sha256)."""
    own = getattr(getattr(model, '_orig_mod', model), 'weights_digest', None)
    if isinstance(own, str) and own:
        return own
    return state_sha256(model)


_PLAIN = (str, int, float, bool, type(None))


@functools.lru_cache(maxsize=512)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _describe(value: Any) -> Any:
    """``value`` as JSON-able data that changes when what it computes may change, or ``...`` (Ellipsis) when it
    cannot be told: plain data as itself, containers and dataclasses item by item, a class or function by its
    qualified name and the sha256 of the source file defining it, a ``functools.partial`` by its function and
    arguments, a builtin by its name."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (tuple, list)):
        items = [_describe(v) for v in value]
        return ... if any(v is ... for v in items) else items
    if isinstance(value, dict):
        items = {str(k): _describe(v) for k, v in value.items()}
        return ... if any(v is ... for v in items.values()) else items
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _describe({'__class__': type(value), **fields})
    if isinstance(value, functools.partial):
        return _describe({'__partial__': value.func, 'args': value.args, 'keywords': value.keywords})
    if inspect.isbuiltin(value) or isinstance(value, (types.BuiltinFunctionType, types.BuiltinMethodType)):
        return f'builtin:{getattr(value, "__module__", "")}.{getattr(value, "__qualname__", "")}'
    if isinstance(value, torch.Tensor):  # a plain tensor attribute (not a buffer: not in the state dict)
        t = value.detach().cpu().contiguous()
        return f'tensor:{t.dtype}:{tuple(t.shape)}:' + hashlib.sha256(
            t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b'').hexdigest()
    if inspect.ismethod(value):  # a bound method computes with its object, which cannot be told here
        return ...
    if isinstance(value, type) or inspect.isfunction(value):
        try:
            path = inspect.getsourcefile(value)
            st = os.stat(path) if path else None
        except (OSError, TypeError):
            st = None
        if st is None:
            return ...
        source = f'{value.__module__}.{value.__qualname__}@{_file_digest(path, st.st_mtime_ns, st.st_size)}'
        if inspect.isfunction(value) and value.__closure__:  # a closure: the values it captured are part of it
            try:
                cells = _describe([c.cell_contents for c in value.__closure__])
            except ValueError:  # a cell not filled yet
                return ...
            return ... if cells is ... else [source, cells]
        return source
    return ...


def computation_key(module: nn.Module) -> tuple[str | None, str]:
    """What computes ``module``'s features, as a hash for the feature cache: ``(key, '')``, or ``(None, why)`` when
    the computation cannot be identified (then nothing may be cached).

    A module's ``cache_key`` attribute (a non-empty str) is taken as given: the caller vouches that it names the
    whole computation, weights aside (they are keyed separately). Otherwise the key covers, for every submodule,
    its class (qualified name and the sha256 of the source file defining it, so an edited model file is a new key),
    its attributes (``global_pool='max'``, ``eps``, config dicts, functions by their source), its forward hooks
    and an instance-level ``forward`` override. An attribute that is no plain data, function or class (an object,
    a function defined at an interactive prompt) makes the computation unidentifiable."""
    own = getattr(module, 'cache_key', None)
    if own is not None:
        if not (isinstance(own, str) and own):
            return None, f'its cache_key attribute is {own!r}, not a non-empty string'
        return hashlib.sha256(f'cache_key:{own}'.encode()).hexdigest(), ''
    h = hashlib.sha256()
    for name, m in module.named_modules():
        where = name or 'the model'
        cls = _describe(type(m))
        if cls is ...:
            return None, f'the source of {type(m).__qualname__} ({where}) cannot be read'
        attrs = {}
        for k, v in vars(m).items():
            if k.startswith('_') or k == 'training' or isinstance(v, nn.Module) or k in m._parameters \
                    or k in m._buffers:
                continue
            try:
                attrs[k] = _describe(v)
            except RecursionError:  # a structure or closure that refers to itself
                attrs[k] = ...
            if attrs[k] is ...:
                return None, f'{where}.{k} is a {type(v).__name__}, which does not say what it computes'
        hooks = _describe([*m._forward_pre_hooks.values(), *m._forward_hooks.values()])
        if hooks is ...:
            return None, f'a forward hook of {where} has no readable source'
        h.update(json.dumps([name, cls, attrs, hooks], sort_keys=True).encode())
    return h.hexdigest(), ''


def for_inference(model: nn.Module, device: torch.device) -> nn.Module:
    """Eval mode on ``device`` in channels_last, the faster layout for the SINet family on GPUs (cuDNN) and on
    CPUs (oneDNN: about 10% faster than NCHW for every model of the family; see benchmarks/bench_model.py)."""
    return model.eval().to(device).to(memory_format=torch.channels_last)


def is_video_model(module: nn.Module) -> bool:
    """Whether ``module`` takes clips ``(B, T, 3, H, W)``: this package's families (their pretrained cfg names a
    test protocol) do; a timm image model does not."""
    module = getattr(module, '_orig_mod', module)
    cfg = getattr(module, 'pretrained_cfg', None) or {}
    return isinstance(module, VideoReIDNet) or bool(cfg.get('protocol'))


def takes_cameras(module: nn.Module) -> bool:
    """Whether ``module`` takes camera ids (``forward(x, camids=...)``), as its pretrained cfg declares
    (``camera_input``)."""
    cfg = getattr(getattr(module, '_orig_mod', module), 'pretrained_cfg', None) or {}
    return bool(cfg.get('camera_input'))


def check_materialised(model: nn.Module) -> None:
    """A :class:`ModelOutputError` for a model with weights on the meta device (created without data)."""
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise ModelOutputError(f'{type(model).__name__} has weights on the meta device (created without data): '
                               'load a state dict into it (load_state_dict(..., assign=True)) or .to_empty() and '
                               'initialise it before evaluating')


def nonfinite_weights(model: nn.Module) -> list[str]:
    """The floating-point tensors of ``model``'s state (a compiled model's original module) holding NaN or Inf."""
    return nonfinite_tensors(getattr(model, '_orig_mod', model).state_dict())


def _data_config(module: nn.Module, override: dict[str, Any] | None) -> dict[str, Any]:
    if getattr(module, 'pretrained_cfg', None):
        return timm.data.resolve_data_config(dict(override or {}), model=module)
    return timm.data.resolve_data_config(dict(override or {}), pretrained_cfg=video_cfg())


def _unknown_model(name: str) -> EvalError:
    zoo = [n for n in timm.list_pretrained() if n.split('.')[0] in ARCHITECTURES and not n.endswith('.tv_in1k')]
    return EvalError(
        f'unknown model {name!r}: timm has no such architecture. Video re-ID models: {", ".join(ARCHITECTURES)}; '
        f'with weights: {", ".join(zoo)}. Any timm image model (e.g. resnet50.tv_in1k) is evaluated frame by '
        'frame; hf-hub:ORG/NAME and local-dir:FOLDER work too.')


def check_model_name(name: str) -> None:
    """Raise :class:`EvalError` for a name timm cannot create (files, ``hf-hub:`` and ``local-dir:`` pass)."""
    if ':' in name or Path(name).suffix in (*CHECKPOINT_SUFFIXES, ONNX_SUFFIX):
        return
    if not timm.is_model(name.split('.')[0]):
        raise _unknown_model(name)


def _local_dir(name: str) -> Path:
    """The folder of a ``local-dir:`` name, checked (a folder, config.json naming an architecture, a complete
    model.safetensors; never a pickle) before timm reads it from deep inside."""
    folder = Path(name.split(':', 1)[1]).expanduser()
    check_local_dir(folder)
    return folder


def _check_strict(module: nn.Module, folder: Path, name: str) -> None:
    """A timm image model from a ``local-dir:`` folder got every tensor of its body from model.safetensors, and
    every tensor there has a place in it. timm loads non-strictly when the classifier sizes differ (always, with
    ``num_classes=0``): missing tensors would keep their random init, a folder whose config.json names another
    architecture would load partly. (The video family's builder checks its own loads.)"""
    heads = (getattr(module, 'pretrained_cfg', None) or {}).get('classifier') or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    state = load_file(str(folder / 'model.safetensors'))
    problems = mismatch_summary(state, module, ignore=tuple(f'{h}.' for h in heads))
    if problems:
        arch = module.pretrained_cfg.get('architecture')
        raise CheckpointError(f'{name} (config.json names {arch}) does not fit {arch}: {problems}. Give the weights '
                              'of this architecture, or fix config.json\'s "architecture"')


def _create(name: str, pretrained: bool) -> nn.Module:
    check_model_name(name)
    folder = _local_dir(name) if name.startswith('local-dir:') else None
    try:
        with hub_or_cache() if pretrained else contextlib.nullcontext() as unreachable:
            module = timm.create_model(name, pretrained=pretrained, num_classes=0)
    except SinetTimmError:
        raise
    except RuntimeError as e:
        if 'Invalid pretrained tag' in str(e) or 'Unknown model' in str(e):
            zoo = f' ({problem})' if (problem := zoo_problem()) else ''
            raise EvalError(f'{name}: {e} `timm.list_pretrained("{name.split(".")[0]}*")` lists its tags{zoo}.'
                            ) from None
        if folder is not None and 'loading state_dict' in str(e):  # torch's strict load of a timm image model
            first = str(e).replace('\n', ' ').replace('\t', '')
            raise CheckpointError(f'{name}: model.safetensors does not fit its config.json: {first[:300]}') from None
        raise
    except (OSError, ValueError) as e:
        mod = type(e).__module__ or ''
        if pretrained and (isinstance(e, OSError) or mod.startswith(('huggingface_hub', 'requests', 'httpx'))):
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            what = (f'the Hub cannot be reached ({unreachable}) and the local cache does not have them'
                    if unreachable else f'{type(e).__name__}: {first}')
            raise WeightsUnavailableError(
                f'could not get the pretrained weights of {name}: {what}. Download them once with network access, '
                'point HF_HUB_CACHE at a cache that has them, or evaluate random weights (--no-pretrained).') from e
        raise
    if folder is not None and pretrained and not isinstance(module, VideoReIDNet):
        _check_strict(module, folder, name)
    return module


def load_model(
        model: str | Path | nn.Module | LoadedModel,
        *,
        pretrained: bool = True,
        checkpoint: str | Path | None = None,
        seed: int | None = None,
        input: str = 'auto',
        data_config: dict[str, Any] | None = None,
        name: str | None = None,
) -> LoadedModel:
    """What the caller has -> a :class:`LoadedModel` in eval mode with ``num_classes=0`` (see the module docstring).

    Args:
        model: a timm / zoo / ``hf-hub:`` / ``local-dir:`` name, a checkpoint file, an ``nn.Module`` or a
            :class:`LoadedModel` (returned as is, ``data_config`` applied).
        pretrained: load the name's weights; ``False`` draws random weights (with ``seed`` when given).
        checkpoint: a released ``.pth.tar`` or converted ``.safetensors`` to load into the architecture that
            ``model`` names (or the one its keys show, when ``model`` is None).
        input: ``auto`` (video models take clips, timm image models frames), ``clips`` or ``frames``.
        data_config: timm data-config fields that override the model's preprocessing.
        name: how outputs name the model (default: as given).
    """
    if input not in MODEL_INPUTS:
        raise EvalError(f'input must be one of {", ".join(MODEL_INPUTS)}; got {input!r}')
    if isinstance(model, LoadedModel):
        if data_config:
            model.data_config = _data_config(model.module, data_config)
        return model
    if isinstance(model, OnnxModel) or (isinstance(model, (str, Path)) and checkpoint is None
                                        and Path(model).suffix == ONNX_SUFFIX):
        return _load_onnx(model, input, data_config, name)
    if isinstance(model, (str, Path)) and checkpoint is None and Path(model).suffix in CHECKPOINT_SUFFIXES \
            and Path(model).is_file():
        model, checkpoint = None, model
    entry = None
    if checkpoint is not None:
        arch = str(model).split('.')[0] if model and ':' not in str(model) else None
        module = load_released(checkpoint, arch)
        module.reset_classifier(0)
        arch = module.pretrained_cfg.get('architecture')
        weights = f'file:{Path(checkpoint).resolve()}'
        label, random = name or (str(model) if model else arch), False
    elif isinstance(model, nn.Module):
        module, weights, random = model, f'{type(model).__name__} module (weights as given)', False
        arch = (getattr(model, 'pretrained_cfg', None) or {}).get('architecture')
        label = name or arch or type(model).__name__
    else:
        label = name or str(model)
        if not pretrained and seed is not None:
            torch.manual_seed(seed)  # random weights are the same on every run, so their features cache
        module = _create(str(model), pretrained)
        arch = module.pretrained_cfg.get('architecture') or str(model).split('.')[0]
        weights, random = (str(model), False) if pretrained else (f'{model} (random init)', True)
        tag = module.pretrained_cfg.get('tag')
        if pretrained and ':' not in str(model) and tag and f'{arch}.{tag}' in zoo_entries():
            entry = f'{arch}.{tag}'  # a registered name ('vkd_r50' loads its default tag's weights); a folder's or
            # a Hub repo's config.json may name a tag whatever weights it holds
    check_materialised(module)
    finite = not nonfinite_weights(module)
    if not finite:  # said once, here; a run that produces NaN embeddings says it again
        warnings.warn(f'the weights of {label} ({weights}) hold NaN or Inf values: its embeddings will not be finite',
                      NonFiniteWeightsWarning, stacklevel=2)
    video = is_video_model(module)
    frames = input == 'frames' or (input == 'auto' and not video and bool(getattr(module, 'pretrained_cfg', None)))
    if frames:
        if video:
            raise EvalError(f'{label} is a video model: it takes clips, not frames (input="clips" or "auto")')
        module = FrameAverage(module)
    return LoadedModel(
        module=module.eval(), name=label, weights=weights, architecture=arch, input='frames' if frames else 'clips',
        data_config=_data_config(module, data_config), clip_len=int(getattr(module, 'clip_len', CLIP_LEN)),
        random_weights=random, weights_finite=finite, zoo_entry=entry)


def _load_onnx(model: str | Path | OnnxModel, input: str, data_config: dict[str, Any] | None,
               name: str | None) -> LoadedModel:
    """An ONNX file of ``sinet-export`` (or its :class:`OnnxModel`) as a :class:`LoadedModel`: a single-crop file
    embeds each frame and averages them over the clip (like an image model)."""
    module = model if isinstance(model, OnnxModel) else OnnxModel(model)
    frames = module.graph == 'image'
    if input == 'clips' and frames or input == 'frames' and not frames:
        raise EvalError(f'{module.path.name} is a {"single-crop" if frames else "clip"} graph: it takes '
                        f'{"frames" if frames else "clips"} (input="auto" or "{"frames" if frames else "clips"}")')
    return LoadedModel(
        module=module.eval(), name=name or (str(model) if not isinstance(model, OnnxModel) else module.path.name),
        weights=module.weights_label(), architecture=module.architecture, input='frames' if frames else 'clips',
        data_config=_data_config(module, data_config), clip_len=module.clip_len)
