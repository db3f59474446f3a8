"""The training loop of the SINet recipe, on one device or with DistributedDataParallel (``torchrun``).

Run folder (``--output``)::

    config.json         resolved configuration, dataset sizes, versions (a run is recognised by this file)
    train.log           the log
    metrics.jsonl       one JSON line per epoch: lr, losses, train accuracy, speed, evaluation when run
    checkpoints/epoch_NNNN/model.safetensors   all model tensors (classifier and frame projection included)
    checkpoints/epoch_NNNN/state.pt            optimizer, scheduler, grad scaler, RNG states, epoch, best so far
    best/ last/         Hub-ready folders (timm ``save_for_hf``): ``timm.create_model('local-dir:RUN/best',
                        pretrained=True)``; pass ``num_classes=0`` for the re-ID embedding
    final_eval.json     dense evaluation of the best and the last model

Reproducibility: the batches and augmentations of an epoch are a function of ``(seed, epoch)`` (see
:class:`~sinet_train.data.IdentityBatchSampler`), and every epoch reseeds Python, NumPy and torch from
``(seed, epoch, rank)``; a checkpoint holds everything else (weights, optimizer and scheduler state, the epoch).
So a run resumed from a checkpoint continues exactly as the uninterrupted run would have.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import timm
import timm.data
import torch
import torch.distributed as dist
import torch.nn as nn
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file
from timm.models import save_for_hf
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from reid_eval.datasets import get_spec, load_dataset
from reid_eval.errors import EvalError, FrameReadError
from reid_eval.evaluator import EvalOptions, evaluate_split, resolve_device
from reid_eval.extraction import FrameFailure, FramePreprocess, collate_clips, reporting_worker_death
from reid_eval.models import weights_sha256
from reid_eval.results import versions
from reid_eval.synthetic import demo_dataset_root
from sinet_timm import VideoReIDNet
from sinet_timm.archs import TRAINABLE
from sinet_timm.convert import check_local_dir, reid_config, sha256_of
from sinet_timm.errors import SinetTimmError, WeightsUnavailableError
from sinet_timm.hub import (
    METRIC_KEYS,
    PAPER_URL,
    DatasetInfo,
    ResultRow,
    card_data,
    results_table,
    usage_snippet,
)

from .data import (
    ClipTrainTransform,
    IdentityBatchSampler,
    TrainClipDataset,
    check_tracklets,
    chunk_tracklets,
)
from .losses import RELEASED_FRAME_LOSS_WEIGHT, SINetCriterion

__all__ = ['TrainConfig', 'TrainError', 'train', 'RUN_FILES', 'latest_checkpoint', 'load_training_state']

FORMAT = 1
SYNTHETIC = 'synthetic'
# every name sinet-train writes in a run folder; --overwrite removes these and nothing else
RUN_FILES = ('config.json', 'train.log', 'metrics.jsonl', 'checkpoints', 'best', 'last', 'final_eval.json',
             '.eval_cache')
# settings that may change when a run is resumed (they do not change the trajectory of the weights)
RESUME_MUTABLE = frozenset({
    'output', 'root', 'epochs', 'workers', 'device', 'eval_every', 'eval_at_start', 'eval_batch_clips',
    'final_eval', 'keep_checkpoints', 'stop_at_epoch', 'progress', 'overwrite', 'resume', 'log_every',
})


class TrainError(SinetTimmError):
    """A user-facing problem with the arguments, the output folder or the environment."""


@dataclass
class TrainConfig:
    """All settings of a run; the defaults are the released recipe (paper Sec. 4.2, released ``main.py``)."""

    model: str = 'sinet_r50'
    dataset: str = 'mars'
    root: str | None = None
    output: str = 'runs/train'
    split: int = 0
    train_chunk: int | None = None  # None: the released value for the dataset (LS-VID 48, DukeV 32, else whole)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = True  # ImageNet backbone (timm/resnet50.tv_in1k), as the authors
    img_size: tuple[int, int] = (256, 128)
    frames_per_clip: int = 4
    num_identities: int = 8  # P identities per batch (per rank)
    num_instances: int = 4  # K tracklets per identity
    epochs: int = 160
    lr: float = 3e-4
    weight_decay: float = 5e-4
    milestones: tuple[int, ...] = (40, 80, 120)
    gamma: float = 0.1
    margin: float = 0.3
    frame_loss_weight: float = RELEASED_FRAME_LOSS_WEIGHT
    temperature: float = 0.07
    flip_prob: float = 0.5
    erase_prob: float = 0.5
    erase_same_box: bool = False
    amp: str = 'auto'
    clip_grad: float | None = None
    seed: int = 1
    deterministic: bool = False
    workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))  # released: 4
    device: str = 'auto'
    eval_every: int = 10
    eval_mode: str = 'sampled'
    eval_at_start: bool = False
    eval_batch_clips: int = 32
    final_eval: bool = True
    keep_checkpoints: int = 1
    stop_at_epoch: int | None = None
    log_every: int = 0
    progress: bool = True
    resume: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.img_size = (int(self.img_size[0]), int(self.img_size[1]))
        self.milestones = tuple(int(m) for m in self.milestones)
        self.model_kwargs = dict(self.model_kwargs or {})

    @property
    def batch_size(self) -> int:
        return self.num_identities * self.num_instances

    def validate(self) -> None:
        if self.num_instances < 1 or self.num_identities < 2:
            raise TrainError(
                f'a batch needs at least 2 identities (the triplet loss needs negatives) and 1 tracklet each; '
                f'got --num-identities {self.num_identities} --num-instances {self.num_instances}')
        if self.frames_per_clip < 1 or self.frames_per_clip % 4:
            raise TrainError(f'--frames-per-clip must be a multiple of 4 (SBM/IDM/SA work on 4-frame clips), got '
                             f'{self.frames_per_clip}')
        if self.epochs < 1:
            raise TrainError(f'--epochs must be >= 1, got {self.epochs}')
        if self.amp not in ('auto', 'bf16', 'fp16', 'off'):
            raise TrainError(f'--amp must be auto, bf16, fp16 or off, got {self.amp!r}')
        if self.eval_mode not in ('sampled', 'dense'):
            raise TrainError(f'--eval-mode must be sampled or dense, got {self.eval_mode!r}')
        if self.frame_loss_weight < 0:
            raise TrainError('--frame-loss-weight must be >= 0')
        if self.keep_checkpoints < 1:
            raise TrainError('--keep-checkpoints must be >= 1 (resuming needs the last one)')
        if self.resume and self.overwrite:
            raise TrainError('--resume and --overwrite exclude each other')
        if self.seed < 0:
            raise TrainError(f'--seed must be >= 0, got {self.seed}')
        if self.stop_at_epoch is not None and self.stop_at_epoch < 1:
            raise TrainError('--stop-at-epoch must be >= 1')

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d['img_size'] = list(self.img_size)
        d['milestones'] = list(self.milestones)
        return d


# ---------------------------------------------------------------------------------------------------------
# environment


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def _resolve_device(name: str, local_rank: int, world: int) -> torch.device:
    """reid_eval's device check, then the rank's own GPU under torchrun."""
    try:
        dev = resolve_device(name)
    except EvalError as e:
        raise TrainError(str(e)) from e
    if dev.type == 'cuda':
        if world > 1 or dev.index is None:
            dev = torch.device('cuda', local_rank if world > 1 else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    return dev


def _init_distributed(device_name: str) -> _Dist:
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world == 1:
        return _Dist()
    rank, local = int(os.environ.get('RANK', '0')), int(os.environ.get('LOCAL_RANK', '0'))
    if dist.is_initialized():
        return _Dist(dist.get_rank(), dist.get_world_size(), local, False)
    cuda = device_name != 'cpu' and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group('nccl' if cuda else 'gloo')
    return _Dist(rank, world, local, True)


def _set_deterministic(enabled: bool) -> None:
    if enabled:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
        # warn_only: a few CUDA backward kernels (e.g. replicate padding in SBM) have no deterministic version
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def _epoch_seed(seed: int, epoch: int, rank: int, purpose: int = 0) -> int:
    """A seed that depends only on (seed, epoch, rank, purpose)."""
    state = np.random.SeedSequence([seed, purpose, epoch, rank]).generate_state(1, dtype=np.uint64)[0]
    return int(state % (2 ** 63))


def _reseed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states in a form ``torch.load(weights_only=True)`` accepts."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    out: dict[str, Any] = {
        'python': {'version': py_version, 'state': torch.tensor(py_state, dtype=torch.int64), 'gauss': py_gauss},
        'numpy': {'name': np_name, 'keys': torch.from_numpy(np_keys.astype(np.int64)), 'pos': int(np_pos),
                  'has_gauss': int(np_has_gauss), 'gauss': float(np_gauss)},
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out['cuda'] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    py = state['python']
    random.setstate((py['version'], tuple(int(v) for v in py['state'].tolist()), py['gauss']))
    n = state['numpy']
    np.random.set_state((n['name'], n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'], n['gauss']))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available() and len(state['cuda']) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state['cuda'])


def scheduler_state(scheduler: torch.optim.lr_scheduler.MultiStepLR) -> dict[str, Any]:
    """The scheduler's state_dict with its ``milestones`` Counter as a plain dict: ``torch.load(weights_only=True)``
    accepts ``collections.Counter`` only from torch 2.4 on."""
    state = scheduler.state_dict()
    return dict(state, milestones=dict(state['milestones']))


def load_scheduler_state(scheduler: torch.optim.lr_scheduler.MultiStepLR, state: dict[str, Any]) -> None:
    scheduler.load_state_dict(dict(state, milestones=collections.Counter(state['milestones'])))


# ---------------------------------------------------------------------------------------------------------
# run folder


def _owned(out: Path) -> list[Path]:
    return [out / n for n in RUN_FILES if (out / n).exists()]


def prepare_output(cfg: TrainConfig, log: logging.Logger) -> None:
    """Check the run folder: refuse to mix two runs; ``--overwrite`` removes only what a run writes."""
    out = Path(cfg.output)
    if out.exists() and not out.is_dir():
        raise TrainError(f'--output {out} exists and is not a folder')
    owned = _owned(out) if out.exists() else []
    if cfg.resume:
        if not (out / 'config.json').is_file():
            raise TrainError(f'--resume: {out} holds no sinet-train run (no config.json)')
        if latest_checkpoint(out) is None:
            raise TrainError(f'--resume: {out} holds no checkpoint to resume from (expected '
                             f'{out}/checkpoints/epoch_NNNN/{{model.safetensors,state.pt}}; the run stopped before '
                             'its first epoch ended): start it again with --overwrite')
        return
    if owned and not cfg.overwrite:
        raise TrainError(
            f'{out} already holds a training run ({", ".join(p.name for p in owned)}). Pass --resume to continue '
            'it from its last checkpoint, --overwrite to replace it, or choose another --output.')
    if owned:
        log.warning('--overwrite: removing the previous run in %s: %s', out, ', '.join(p.name for p in owned))
        for p in owned:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    others = sorted(p.name for p in out.iterdir()) if out.exists() else []
    if others:
        log.warning('%s already contains %d file(s) that sinet-train did not write; they are kept and left '
                    'untouched: %s', out, len(others), ', '.join(others[:10]) + (' ...' if len(others) > 10 else ''))
    out.mkdir(parents=True, exist_ok=True)


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete ``checkpoints/epoch_NNNN`` folder of a run, or None."""
    folder = Path(out) / 'checkpoints'
    if not folder.is_dir():
        return None
    done = sorted(p for p in folder.glob('epoch_[0-9][0-9][0-9][0-9]')
                  if (p / 'model.safetensors').is_file() and (p / 'state.pt').is_file())
    return done[-1] if done else None


def load_training_state(ckpt: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Model tensors and training state of a checkpoint folder (``state.pt`` read with ``weights_only=True``),
    checked: an unreadable ``state.pt`` or a ``model.safetensors`` whose sha256 is not the one recorded with it is
    a :class:`TrainError` saying what to do."""
    what = (f'delete {ckpt} to resume from the checkpoint before it (if --keep-checkpoints kept one), or start '
            'again with --overwrite')
    try:
        state = torch.load(ckpt / 'state.pt', map_location='cpu', weights_only=True)
    except Exception as e:  # truncated zips, foreign files: torch raises many types
        raise TrainError(f'{ckpt / "state.pt"} cannot be read ({type(e).__name__}: it is truncated or damaged); '
                         f'{what}') from None
    recorded = state.get('model_sha256') if isinstance(state, dict) else None
    if recorded and sha256_of(ckpt / 'model.safetensors') != recorded:
        raise TrainError(f'{ckpt / "model.safetensors"} does not match the sha256 recorded in its state.pt (the file '
                         f'changed or is damaged); {what}')
    try:
        tensors = load_file(str(ckpt / 'model.safetensors'))
    except Exception as e:  # safetensors' own error types
        raise TrainError(f'{ckpt / "model.safetensors"} cannot be read ({e}); {what}') from None
    return tensors, state


def _save_checkpoint(out: Path, epoch: int, model: nn.Module, state: dict[str, Any], keep: int) -> Path:
    folder = out / 'checkpoints'
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f'epoch_{epoch:04d}'
    tmp = folder / f'.tmp_epoch_{epoch:04d}'
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
              str(tmp / 'model.safetensors'))
    torch.save(dict(state, model_sha256=sha256_of(tmp / 'model.safetensors')), tmp / 'state.pt')
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)  # a checkpoint folder is complete or absent
    old = sorted(p for p in folder.glob('epoch_[0-9][0-9][0-9][0-9]') if p != final)
    for p in old[:max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def _export_hub(model: nn.Module, folder: Path, cfg: TrainConfig, info: dict[str, Any]) -> None:
    """A Hub-ready folder (model.safetensors + config.json), replaced atomically."""
    tmp = folder.with_name(f'.tmp_{folder.name}')
    shutil.rmtree(tmp, ignore_errors=True)
    src = {'kind': 'sinet-train', **info,
           'recipe': {k: v for k, v in cfg.to_json().items() if k not in RESUME_MUTABLE}}
    model_config = reid_config(model, cfg.dataset, src)
    model_config['pretrained_cfg'] = {
        'tag': cfg.dataset, 'notes': (f'trained with sinet-train on {cfg.dataset}',)}
    # the architecture arguments, written explicitly: timm < 1.0.31 records none by itself, and local-dir: would
    # then build the default architecture
    model_args = {**cfg.model_kwargs, 'img_size': list(model.img_size)}
    save_for_hf(model, str(tmp), model_config=model_config, model_args=model_args, safe_serialization=True)
    write_run_card(tmp, folder.name, model, cfg, info)
    old = folder.with_name(f'.old_{folder.name}')
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def _card_dataset(cfg: TrainConfig) -> DatasetInfo:
    if cfg.dataset.lower() == SYNTHETIC:
        return DatasetInfo('synthetic', 'synthetic MARS-format demo data')
    return get_spec(cfg.dataset).card_info()


def write_run_card(folder: Path, which: str, model: nn.Module, cfg: TrainConfig, info: dict[str, Any]) -> Path:
    """``folder/README.md``: the model card of a run's ``best/`` or ``last/`` (``which``; so ``sinet-hub push``
    takes them), made like the zoo's (huggingface_hub's ModelCardData): what was trained, how, its evaluation, how
    to load it."""
    arch = model.pretrained_cfg.get('architecture', cfg.model)
    dataset = _card_dataset(cfg)
    m = info.get('eval') or {}
    metrics = {k: m[k] for k in METRIC_KEYS if k in m}
    mode = m.get('mode', cfg.eval_mode)
    rows = [ResultRow(f"this checkpoint, epoch {info.get('epoch')}, {mode} protocol", f'sinet-train, {mode}', metrics,
                      f'sinet-train evaluation ({mode} protocol)', PAPER_URL)] if metrics else []
    name = f'{arch}-{dataset.id}-{which}'
    meta = card_data(name, 'mit', dataset, rows).to_yaml()
    recipe = cfg.to_json()
    keys = ('epochs', 'lr', 'weight_decay', 'milestones', 'num_identities', 'num_instances', 'frames_per_clip',
            'img_size', 'margin', 'frame_loss_weight', 'seed', 'pretrained', 'model_kwargs')
    h, w = model.img_size
    body = f"""# {arch} trained on {dataset.name}

A {arch} video person re-identification model (sinet-timm) trained with `sinet-train` on {dataset.name}
({model.num_classes} training identities), {'from the ImageNet ResNet-50 backbone' if cfg.pretrained else
'from random weights'}; this folder holds the weights of epoch {info.get('epoch')}. Load it with
`timm.create_model("local-dir:THIS_FOLDER", ...)`, or after `sinet-hub push THIS_FOLDER --repo-id ORG/NAME`
with `timm.create_model("hf-hub:ORG/NAME", ...)`:

{usage_snippet('hf-hub:ORG/NAME', (h, w), model.clip_len, model.num_features)}

## Evaluation

{results_table(rows, pending=None if rows else 'this checkpoint')}

{f'Protocol: {mode} (sinet-eval --mode {mode}), cosine distance, torchreid Market-1501 ranking.' if rows else ''}

## Training recipe

{chr(10).join(f'- `{k}`: {recipe[k]}' for k in keys if k in recipe)}
"""
    out = folder / 'README.md'
    out.write_text(str(ModelCard(f'---\n{meta}\n---\n{body}')))
    return out


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, 'a') as f:
        f.write(json.dumps(record) + '\n')


# ---------------------------------------------------------------------------------------------------------
# model, data, evaluation


class _Embedder(nn.Module):
    """The re-ID embedding of a training model (BN-neck feature, classifier skipped) for ``reid_eval``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.num_features = model.num_features
        self.clip_len = model.clip_len

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)




def _check_model_name(name: str) -> None:
    if ':' in name:
        return  # local-dir: / hf-hub: folders are checked once built
    if name.split('.')[0] not in TRAINABLE:
        raise TrainError(f'{name} is not a SINet-family model ({", ".join(TRAINABLE)})')


def _create_model(cfg: TrainConfig, num_classes: int, pretrained: bool) -> nn.Module:
    kwargs = dict(cfg.model_kwargs)
    kwargs.setdefault('img_size', cfg.img_size)
    if pretrained and cfg.model.startswith('local-dir:'):  # missing, truncated, pickle-only: said before timm
        check_local_dir(cfg.model.split(':', 1)[1])
    try:
        model = timm.create_model(cfg.model, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except WeightsUnavailableError as e:
        raise TrainError(f'{e}\nFor an offline run from random weights pass --no-pretrained.') from e
    except (ValueError, TypeError) as e:  # e.g. an img_size too small for SBM, an unknown --model-kwargs key
        raise TrainError(f'cannot create {cfg.model} with {kwargs}: {e}') from None
    if not isinstance(model, VideoReIDNet):
        raise TrainError(f'{cfg.model} is not a SINet-family model ({", ".join(TRAINABLE)})')
    return model


def _dataset_args(cfg: TrainConfig) -> tuple[str, Path]:
    if cfg.dataset.lower() == SYNTHETIC:
        return 'mars', demo_dataset_root()
    if not cfg.root:
        raise TrainError(f'--root is needed for {cfg.dataset}: the folder that holds the dataset folder')
    return get_spec(cfg.dataset).name, Path(cfg.root)


def _eval_transform(cfg: TrainConfig, model: nn.Module):
    """reid_eval's preprocessing (uint8 frames, normalised on the device) at the training frame size."""
    return FramePreprocess.from_data_config(
        timm.data.resolve_data_config({'input_size': (3, *cfg.img_size)}, model=model))


def evaluate(model: nn.Module, cfg: TrainConfig, mode: str, device: torch.device, env: _Dist,
             amp: str) -> dict[str, Any]:
    """Rank the query/gallery split with ``reid_eval`` (``mode`` 'sampled' or 'dense'); metrics on every rank."""
    dataset, root = _dataset_args(cfg)
    emb = _Embedder(model)
    cache_dir = Path(cfg.output) / '.eval_cache' if env.world > 1 else None
    options = EvalOptions(mode=mode, cache=cache_dir is not None, cache_dir=cache_dir, amp=amp,
                          batch_clips=cfg.eval_batch_clips, workers=cfg.workers, shard_clips=1024,
                          progress=cfg.progress and env.main, rank_chunk=256, ranker='numpy')
    weights = weights_sha256(model) if cache_dir is not None else 'in-training'
    was_training = model.training
    try:
        res = evaluate_split(emb, dataset, root, cfg.split, options, device=device, weights=weights,
                             transform=_eval_transform(cfg, model), clip_len=model.clip_len)
    finally:
        model.train(was_training)
    if env.main and cache_dir is not None:
        shutil.rmtree(cache_dir, ignore_errors=True)
    summary = None
    if res is not None:
        metrics = {k: v for k, v in res.metrics.items() if k != 'cmc'}  # the headline ranks are enough here
        summary = {'mode': mode, **metrics, 'num_query': res.num_query, 'num_gallery': res.num_gallery}
    return env.broadcast(summary)


def _sync_buffers(model: nn.Module, env: _Dist) -> None:
    """BN running statistics of rank 0 on every rank (DDP syncs them only at the next forward)."""
    if env.world > 1:
        for b in model.buffers():
            dist.broadcast(b, src=0)


# ---------------------------------------------------------------------------------------------------------
# training


def _make_logger(cfg: TrainConfig, env: _Dist) -> logging.Logger:
    log = logging.getLogger(f'sinet_train.run.{id(cfg)}')
    log.setLevel(logging.INFO if env.main else logging.WARNING)
    log.propagate = False
    h = logging.StreamHandler(sys.stdout)
    h.setFormatter(logging.Formatter('%(asctime)s %(message)s', '%H:%M:%S'))
    log.addHandler(h)
    return log


def _add_file_log(log: logging.Logger, path: Path) -> None:
    h = logging.FileHandler(path)
    h.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(message)s'))
    log.addHandler(h)


def _close_logger(log: logging.Logger) -> None:
    for h in list(log.handlers):
        h.close()
        log.removeHandler(h)


def _check_resume_config(saved: dict[str, Any], cfg: TrainConfig) -> None:
    now = json.loads(json.dumps(cfg.to_json()))  # as stored: tuples are lists
    diff = [f'{k}: run {saved.get(k)!r} vs now {now[k]!r}' for k in now
            if k not in RESUME_MUTABLE and saved.get(k) != now[k]]
    if diff:
        raise TrainError('--resume with settings that differ from the run being resumed (this would change its '
                         'trajectory; start a new --output instead):\n  ' + '\n  '.join(diff))


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> str:
    if device.type != 'cuda':
        return 'off'
    if cfg.amp == 'auto':
        return 'bf16' if torch.cuda.is_bf16_supported() else 'fp16'
    return cfg.amp


def _progress(it, total: int, enabled: bool, desc: str) -> Iterator:
    if not enabled:
        return iter(it)
    return iter(tqdm(it, total=total, desc=desc, leave=False, dynamic_ncols=True))


def train_one_epoch(
        model: nn.Module,
        loader: DataLoader,
        criterion: SINetCriterion,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        amp: str = 'off',
        scaler: torch.amp.GradScaler | None = None,
        clip_grad: float | None = None,
        progress: bool = False,
        log: logging.Logger | None = None,
        log_every: int = 0,
        desc: str = 'train',
) -> dict[str, float]:
    """One pass over ``loader``; returns sums of the loss parts, correct predictions, clips and steps."""
    model.train()
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(amp)
    acc: dict[str, torch.Tensor] = {}  # running sums on the device: no host sync per step
    counts = {'steps': 0, 'skipped': 0, 'clips': 0}
    for step, (x, pids) in enumerate(_progress(loader, len(loader), progress, desc)):
        if isinstance(x, FrameFailure):
            raise FrameReadError(x.path, x.reason, 'Replace or delete the file (and its entry in the dataset lists); '
                                 '--resume continues from the last checkpoint.', what='training frame')
        if bool((pids == pids[0]).all()):
            counts['skipped'] += 1  # released: a batch of a single identity has no triplet negatives
            continue
        x = x.to(device, non_blocking=True)
        pids = pids.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(x)
        parts = criterion(out, pids)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(parts.loss).backward()
            if clip_grad:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            scaler.step(optimizer)
            scaler.update()
        else:
            parts.loss.backward()
            if clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            optimizer.step()
        n = pids.numel()
        for k, v in parts.as_tensors().items():
            acc[k] = acc.get(k, 0) + v.float() * n
        acc['correct'] = acc.get('correct', 0) + (out.logits.detach().argmax(1) == pids).sum()
        counts['clips'] += n
        counts['steps'] += 1
        if log is not None and log_every and (step + 1) % log_every == 0:
            log.info('  %s step %d/%d  loss %.4f', desc, step + 1, len(loader), float(parts.loss))
    sums: dict[str, float] = {k: float(v) for k, v in acc.items()}
    for k in ('loss', 'ce', 'triplet', 'correct'):
        sums.setdefault(k, 0.0)
    sums.update({k: float(v) for k, v in counts.items()})
    return sums


def _reduce_sums(sums: dict[str, float], env: _Dist, device: torch.device) -> dict[str, float]:
    if env.world == 1:
        return sums
    keys = sorted(sums)
    t = torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist(), strict=True))


def _epoch_record(epoch: int, lr: float, sums: dict[str, float], seconds: float) -> dict[str, Any]:
    clips = max(sums['clips'], 1)
    rec: dict[str, Any] = {'epoch': epoch, 'lr': lr}
    for k in ('loss', 'ce', 'triplet', 'frame_infonce'):
        if k in sums:
            rec[k] = sums[k] / clips
    rec.update(acc=100.0 * sums['correct'] / clips, steps=int(sums['steps']), skipped_batches=int(sums['skipped']),
               clips=int(sums['clips']), time_s=round(seconds, 3),
               clips_per_s=round(sums['clips'] / seconds, 2) if seconds > 0 else None)
    return rec


def _fmt_metrics(m: dict[str, Any]) -> str:
    return (f"mAP {m['mAP']:.1f}  R1 {m['rank1']:.1f}  R5 {m['rank5']:.1f}  R10 {m['rank10']:.1f}  "
            f"R20 {m['rank20']:.1f}")


def _after_worker_death(cfg: TrainConfig) -> str:
    ckpt = latest_checkpoint(Path(cfg.output))
    return (f'it was most likely killed for lack of memory: use fewer workers (--workers, now {cfg.workers}). '
            + (f'{ckpt} is kept: rerun with --resume (and --workers) to go on from it.' if ckpt is not None else
               'No epoch had finished, so there is nothing to resume: start again with --overwrite.'))


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or resume) a run; returns the summary written to ``final_eval.json`` (empty on ranks > 0)."""
    cfg.validate()
    env = _init_distributed(cfg.device)
    log = _make_logger(cfg, env)
    # process-wide switches this run may flip; restored afterwards (train() can be called from Python)
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        # a worker may die at any point while the (persistent) workers live, in training or evaluation
        with reporting_worker_death(lambda: _after_worker_death(cfg)):
            return _train(cfg, env, log)
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
        _close_logger(log)
        if env.owns_group:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, env: _Dist, log: logging.Logger) -> dict[str, Any]:
    out = Path(cfg.output)
    _check_model_name(cfg.model)
    _set_deterministic(cfg.deterministic)
    device = _resolve_device(cfg.device, env.local_rank, env.world)
    amp = _amp_dtype(cfg, device)

    # data
    dataset, root = _dataset_args(cfg)
    data = load_dataset(dataset, root, cfg.split, check_frames=False)
    check_tracklets(data.train)
    chunk = get_spec(data.name).train_chunk if cfg.train_chunk is None else cfg.train_chunk
    data.train = chunk_tracklets(data.train, chunk)
    pids = [pid for _, pid, _ in data.train]
    sampler = IdentityBatchSampler(pids, cfg.num_instances, cfg.num_identities, cfg.seed, env.rank, env.world)
    batches_per_epoch = len(sampler.rank_batches(0))
    if batches_per_epoch == 0:
        raise TrainError(f'the training set ({len(set(pids))} identities, {len(pids)} tracklets) gives fewer '
                         f'batches of {cfg.num_identities} identities x {cfg.num_instances} tracklets per epoch than '
                         f'the {env.world} ranks need')
    transform = ClipTrainTransform(cfg.img_size, cfg.flip_prob, cfg.erase_prob, same_box=cfg.erase_same_box)
    loader_gen = torch.Generator()
    loader = DataLoader(
        TrainClipDataset(data.train, transform, cfg.frames_per_clip), batch_sampler=sampler,
        num_workers=cfg.workers, pin_memory=device.type == 'cuda', persistent_workers=cfg.workers > 0,
        generator=loader_gen, collate_fn=collate_clips)

    # model, objective, optimiser
    _reseed(cfg.seed)
    # a resumed run takes every weight from its checkpoint: no ImageNet download
    model = _create_model(cfg, data.num_train_pids, cfg.pretrained and not cfg.resume).to(device)
    if device.type == 'cuda':
        model = model.to(memory_format=torch.channels_last)
    criterion = SINetCriterion(cfg.num_instances, cfg.margin, cfg.frame_loss_weight, cfg.temperature,
                               clip_len=model.clip_len)
    uses_frame_loss = model.projection is not None and cfg.frame_loss_weight > 0
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    scaler = torch.amp.GradScaler('cuda') if amp == 'fp16' else None

    # everything is checked; now rank 0 checks and prepares the folder; the others learn whether it worked
    err = None
    if env.main:
        try:
            prepare_output(cfg, log)
        except TrainError as e:
            err = str(e)
    err = env.broadcast(err)
    if err is not None:
        raise TrainError(err if env.main else f'rank 0 refused the run: {err}')
    if env.main:
        _add_file_log(log, out / 'train.log')

    start_epoch, best = 0, {'rank1': -math.inf, 'epoch': None}
    if cfg.resume:
        ckpt = latest_checkpoint(out)
        saved_cfg = json.loads((out / 'config.json').read_text())['config']
        _check_resume_config(saved_cfg, cfg)
        tensors, state = load_training_state(ckpt)
        model.load_state_dict(tensors, strict=True)
        optimizer.load_state_dict(state['optimizer'])
        load_scheduler_state(scheduler, state['scheduler'])
        if scaler is not None and state.get('scaler'):
            scaler.load_state_dict(state['scaler'])
        set_rng_state(state['rng'])
        start_epoch, best = int(state['epoch']), dict(state['best'])
        if best['rank1'] is None:
            best['rank1'] = -math.inf
        log.info('resumed from %s (epoch %d done)', ckpt, start_epoch)
        if env.main:
            kept = [r for r in _read_metrics(out / 'metrics.jsonl') if r['epoch'] <= start_epoch]
            (out / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in kept))

    raw = model
    if env.world > 1:
        model = nn.parallel.DistributedDataParallel(
            raw, device_ids=[device.index] if device.type == 'cuda' else None,
            find_unused_parameters=raw.projection is not None and not uses_frame_loss)

    if env.main:
        n_params = sum(p.numel() for n, p in raw.named_parameters() if not n.startswith(('classifier', 'projection')))
        record = {
            'sinet_train': FORMAT, 'config': cfg.to_json(),
            'derived': {
                'architecture': raw.pretrained_cfg.get('architecture'), 'num_classes': data.num_train_pids,
                'train_tracklets': len(data.train), 'batch_size_per_rank': cfg.batch_size,
                'global_batch_size': cfg.batch_size * env.world, 'world_size': env.world,
                'batches_per_epoch_per_rank': batches_per_epoch, 'device': str(device), 'amp': amp,
                'frame_loss': uses_frame_loss, 'params_without_classifier': n_params,
                'dataset_dir': data.dataset_dir,
            },
            'versions': versions(),
            'started': _dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds'),
        }
        if cfg.resume:  # keep when the run started and each time it was resumed
            previous = json.loads((out / 'config.json').read_text())
            record['started'] = previous.get('started')
            record['resumed'] = previous.get('resumed', []) + [
                {'at_epoch': start_epoch, 'date': _dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds'),
                 'world_size': env.world}]
        (out / 'config.json').write_text(json.dumps(record, indent=2))
        log.info('sinet-train: %s on %s (%d identities, %d tracklets), %d x %d clips per batch on %d rank(s), '
                 '%s, amp %s, frame loss %s', cfg.model, cfg.dataset, data.num_train_pids, len(data.train),
                 cfg.num_identities, cfg.num_instances, env.world, device, amp,
                 f'x{cfg.frame_loss_weight}' if uses_frame_loss else 'off')

    if cfg.eval_at_start and start_epoch == 0:
        _reseed(_epoch_seed(cfg.seed, 0, env.rank, purpose=1))
        m = evaluate(raw, cfg, cfg.eval_mode, device, env, amp)
        log.info('epoch   0  untrained: %s', _fmt_metrics(m))
        if env.main:
            _append_jsonl(out / 'metrics.jsonl', {'epoch': 0, 'eval': m})

    last_epoch = min(cfg.epochs, cfg.stop_at_epoch or cfg.epochs)
    last_eval: dict[str, Any] | None = None  # the sampled evaluation of the last epoch, for last/'s card
    for epoch in range(start_epoch, last_epoch):
        _reseed(_epoch_seed(cfg.seed, epoch, env.rank))
        sampler.set_epoch(epoch)
        loader_gen.manual_seed(_epoch_seed(cfg.seed, epoch, 0))
        lr = scheduler.get_last_lr()[0]
        t0 = time.perf_counter()
        sums = train_one_epoch(model, loader, criterion, optimizer, device, amp, scaler, cfg.clip_grad,
                               cfg.progress and env.main, log, cfg.log_every, f'epoch {epoch + 1}')
        if device.type == 'cuda':
            torch.cuda.synchronize()
        sums = _reduce_sums(sums, env, device)
        scheduler.step()
        rec = _epoch_record(epoch + 1, lr, sums, time.perf_counter() - t0)
        if not all(math.isfinite(rec.get(k, 0.0)) for k in ('loss', 'ce', 'triplet', 'frame_infonce')):
            raise TrainError(f'the loss is not finite at epoch {epoch + 1} ({rec}); lower --lr, use --clip-grad '
                             'or --amp off')
        msg = (f"epoch {epoch + 1:3d}  lr {lr:.2e}  loss {rec['loss']:.4f}  ce {rec['ce']:.4f}  "
               f"tri {rec['triplet']:.4f}")
        if 'frame_infonce' in rec:
            msg += f"  infonce {rec['frame_infonce']:.4f}"
        msg += f"  acc {rec['acc']:.1f}%  {rec['clips_per_s']} clips/s"
        log.info(msg)

        _sync_buffers(raw, env)
        due = cfg.eval_every > 0 and (epoch + 1) % cfg.eval_every == 0
        if due or epoch + 1 == cfg.epochs:
            m = evaluate(raw, cfg, cfg.eval_mode, device, env, amp)
            rec['eval'] = m
            last_eval = m
            improved = m['rank1'] > best['rank1']
            if improved:
                best = {'rank1': m['rank1'], 'epoch': epoch + 1}
                if env.main:
                    _export_hub(raw, out / 'best', cfg, {'epoch': epoch + 1, 'eval': m})
            log.info('          %s eval: %s%s', cfg.eval_mode, _fmt_metrics(m), '  (best)' if improved else '')
        rec['best_rank1'] = best['rank1'] if best['epoch'] is not None else None
        rec['best_epoch'] = best['epoch']
        if env.main:
            _append_jsonl(out / 'metrics.jsonl', rec)
            state = {
                'format': FORMAT, 'epoch': epoch + 1, 'optimizer': optimizer.state_dict(),
                'scheduler': scheduler_state(scheduler), 'scaler': scaler.state_dict() if scaler is not None else None,
                'rng': rng_state(), 'best': {'rank1': best['rank1'] if best['epoch'] else None,
                                             'epoch': best['epoch']},
                'sampler_epoch': epoch + 1, 'world_size': env.world,
            }
            _save_checkpoint(out, epoch + 1, raw, state, cfg.keep_checkpoints)
        env.barrier()

    finished_epoch = max(start_epoch, last_epoch)
    if finished_epoch < cfg.epochs:
        log.info('stopped after epoch %d of %d; continue with --resume', finished_epoch, cfg.epochs)
        if env.main:
            _export_hub(raw, out / 'last', cfg, {'epoch': finished_epoch})
        return {'stopped_at_epoch': finished_epoch}

    summary: dict[str, Any] = {
        'epochs': cfg.epochs,
        'best': {'epoch': best['epoch'], 'rank1': best['rank1'] if best['epoch'] else None, 'mode': cfg.eval_mode},
    }
    if env.main:
        _export_hub(raw, out / 'last', cfg, {'epoch': cfg.epochs, 'eval': last_eval})
    env.barrier()
    if cfg.final_eval:
        last_tensors = {k: v.detach().clone() for k, v in raw.state_dict().items()}
        final: dict[str, Any] = {}
        for which in ('best', 'last'):
            epoch_of = best['epoch'] if which == 'best' else cfg.epochs
            if which == 'best' and (epoch_of is None or not (out / 'best').exists()):
                continue
            if which == 'last' and best['epoch'] == cfg.epochs and 'best' in final:
                final['last'] = dict(final['best'])
                continue
            if which == 'best':
                raw.load_state_dict(load_file(str(out / 'best' / 'model.safetensors')))
            else:
                raw.load_state_dict(last_tensors)
            _sync_buffers(raw, env)
            m = evaluate(raw, cfg, 'dense', device, env, amp)
            final[which] = {'epoch': epoch_of, **m}
            log.info('final dense eval of the %s model (epoch %d): %s', which, epoch_of, _fmt_metrics(m))
        raw.load_state_dict(last_tensors)
        for which, result in final.items() if env.main else ():  # the cards show the dense (paper) protocol now
            write_run_card(out / which, which, raw, cfg, {'epoch': result['epoch'], 'eval': result})
        summary['final_dense'] = final
    if env.main:
        (out / 'final_eval.json').write_text(json.dumps(summary, indent=2))
    return summary if env.main else {}
