"""The evaluation API: :func:`evaluate` a model on a benchmark, :func:`extract` embeddings of your own tracklets,
:func:`rank` embeddings under the benchmark protocol.

Data flows one way: dataset spec (:mod:`reid_eval.datasets`) -> clips (:mod:`reid_eval.protocol`) -> features
(:mod:`reid_eval.extraction`, cached by :mod:`reid_eval.cache`) -> ranking (:class:`ReIDEvaluator`,
:mod:`reid_eval.ranking`) -> results (:mod:`reid_eval.results`). Options are an :class:`EvalOptions`; the model is
anything :func:`reid_eval.models.load_model` takes.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from .cache import FeatureCache, default_cache_dir
from .datasets import check_layout, get_spec, load_dataset
from .errors import EvalError
from .extraction import AMP_CHOICES, ExtractPlan, FramePreprocess, extract_features, resolve_amp
from .models import LoadedModel, check_model_name, for_inference, load_model, weights_sha256
from .paper import paper_metrics
from .protocol import MODES
from .ranking import RANKERS, rank_metrics, ranker_description
from .results import METRIC_KEYS, Embeddings, EvalResult, SplitResult, versions
from .synthetic import demo_dataset_root
from .tracklets import InputTracklet

__all__ = ['SYNTHETIC', 'EvalOptions', 'ReIDEvaluator', 'evaluate', 'evaluate_split', 'extract', 'rank',
           'resolve_device']

SYNTHETIC = 'synthetic'  # the demo dataset: a small generated MARS-format set (no --root needed)


@dataclass
class EvalOptions:
    """How to evaluate: the protocol and how to run it. The defaults are ``sinet-eval``'s (the released protocol)."""

    mode: str = 'dense'  # dense: every frame in 4-frame strided clips (the paper); sampled: one clip per tracklet
    split: int | str | Sequence[int] = 0  # split id of iLIDS-VID / PRID-2011, 'all' (mean and std), or a list
    clip_len: int | None = None  # frames per clip (default: the model's, 4 for the SINet family)
    batch_clips: int | None = None  # clips per forward pass (default: 32 on CUDA, 4 on CPU)
    device: str | torch.device = 'auto'  # auto, cpu, cuda or cuda:N
    amp: str = 'auto'  # autocast on CUDA: auto (bf16), bf16, fp16, off; always off on CPU
    workers: int = field(default_factory=lambda: min(8, os.cpu_count() or 1))  # frame-decoding processes
    cache: bool = True  # read and write the feature cache
    cache_dir: Path | None = None  # default: ~/.cache/sinet-timm/features ($SINET_TIMM_CACHE/features)
    shard_clips: int = 2048  # clips per cached shard (the unit of resumption)
    rank_chunk: int = 256  # queries per distance-matrix chunk
    ranker: str = 'numpy'  # numpy (whole-array port of torchreid's) or torchreid (its evaluate_rank)
    compile: str | None = None  # torch.compile backend ('inductor', ...), or None
    data_config: dict[str, Any] | None = None  # timm data-config fields overriding the model's preprocessing
    progress: bool = True  # progress bars

    def validate(self) -> None:
        """Raise :class:`EvalError` for an option that cannot work, naming the command-line flag."""
        if self.mode not in MODES:
            raise EvalError(f'--mode must be one of {", ".join(MODES)}, got {self.mode!r}')
        if self.batch_clips is not None and self.batch_clips < 1:
            raise EvalError(f'--batch-clips must be a positive number of clips, got {self.batch_clips}')
        if self.workers < 0:
            raise EvalError(f'--workers must be >= 0 (0 decodes in the main process), got {self.workers}')
        if self.shard_clips < 1:
            raise EvalError(f'--shard-clips must be a positive number of clips, got {self.shard_clips}')
        if self.rank_chunk < 1:
            raise EvalError(f'--rank-chunk must be a positive number of queries, got {self.rank_chunk}')
        if self.amp not in AMP_CHOICES:
            raise EvalError(f'--amp must be one of {", ".join(AMP_CHOICES)}, got {self.amp!r}')
        if self.ranker not in RANKERS:
            raise EvalError(f'--ranker must be one of {", ".join(RANKERS)}, got {self.ranker!r}')
        if self.clip_len is not None and self.clip_len < 1:
            raise EvalError(f'clip_len must be a positive number of frames, got {self.clip_len}')

    def splits(self, dataset: str) -> list[int]:
        """The split ids to evaluate on ``dataset``."""
        n = get_spec(dataset).num_splits
        if self.split == 'all':
            return list(range(n))
        if isinstance(self.split, (list, tuple)):
            return [int(s) for s in self.split]
        try:
            return [int(self.split)]
        except (TypeError, ValueError):
            raise EvalError(f"--split must be an integer or 'all', got {self.split!r}") from None


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` -> a usable device, or an EvalError saying what is wrong."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise EvalError(f'unknown device {name!r}; use auto, cpu, cuda or cuda:N') from e
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise EvalError(f'--device {name} was asked for, but PyTorch sees no CUDA GPU '
                            f'(torch {torch.__version__}, CUDA build: {torch.version.cuda}). Use --device cpu.')
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise EvalError(f'--device {name}: only {torch.cuda.device_count()} GPU(s) visible')
    elif dev.type != 'cpu':
        raise EvalError(f'unsupported device {name!r}; use auto, cpu, cuda or cuda:N')
    return dev


class ReIDEvaluator:
    """Collects embeddings with their identities and cameras (:meth:`process`), then ranks the queries against
    the gallery under the benchmark's protocol (:meth:`evaluate`), like fast-reid's ``ReidEvaluator``.

    The first ``num_query`` embeddings processed are the queries, the rest the gallery; with
    ``add_query_to_gallery`` (MARS, as released) the queries are ranked against query + gallery.
    """

    def __init__(self, num_query: int, *, add_query_to_gallery: bool = False, ranker: str = 'numpy',
                 chunk: int = 256, device: torch.device | str = 'cpu'):
        self.num_query, self.add_query_to_gallery = num_query, add_query_to_gallery
        self.ranker, self.chunk, self.device = ranker, chunk, device
        self.reset()

    def reset(self) -> None:
        self._parts: list[Embeddings] = []

    def process(self, features: torch.Tensor, pids: Sequence[int], camids: Sequence[int],
                names: Sequence[str] | None = None, tracklet_ids: Sequence[int] | None = None) -> None:
        """Add a batch of embeddings (in query-then-gallery order)."""
        start = sum(len(p) for p in self._parts)
        n = features.shape[0]
        self._parts.append(Embeddings(
            features.float().cpu(), torch.as_tensor(list(pids), dtype=torch.long),
            torch.as_tensor(list(camids), dtype=torch.long),
            list(names) if names is not None else [str(start + i) for i in range(n)],
            torch.as_tensor(list(tracklet_ids) if tracklet_ids is not None else range(start, start + n),
                            dtype=torch.long)))

    def evaluate(self) -> tuple[dict[str, Any], Embeddings, Embeddings]:
        """Metrics (percent) and the query and gallery embeddings as ranked."""
        allf = _cat(self._parts)
        q, g = _slice(allf, 0, self.num_query), _slice(allf, self.num_query, len(allf))
        if self.add_query_to_gallery:
            g = _cat([q, g])
        return rank(q, g, ranker=self.ranker, chunk=self.chunk, device=self.device), q, g


def _cat(parts: Sequence[Embeddings]) -> Embeddings:
    return Embeddings(torch.cat([p.features for p in parts]), torch.cat([p.pids for p in parts]),
                      torch.cat([p.camids for p in parts]), [n for p in parts for n in p.names],
                      torch.cat([p.tracklet_ids for p in parts]))


def _slice(e: Embeddings, lo: int, hi: int) -> Embeddings:
    return Embeddings(e.features[lo:hi], e.pids[lo:hi], e.camids[lo:hi], e.names[lo:hi], e.tracklet_ids[lo:hi])


def rank(query: Embeddings, gallery: Embeddings, *, ranker: str = 'numpy', chunk: int = 256,
         device: torch.device | str = 'cpu') -> dict[str, Any]:
    """mAP and CMC (percent) of ``query`` against ``gallery``: cosine distance, gallery entries of the query's
    identity *and* camera removed (torchreid's Market-1501 rule); see :func:`reid_eval.ranking.rank_metrics`."""
    return rank_metrics(query.features, gallery.features, query.pids.numpy(), query.camids.numpy(),
                        gallery.pids.numpy(), gallery.camids.numpy(), chunk=chunk, device=device, ranker=ranker)


def _protocol(options: EvalOptions, spec_name: str, input_note: str) -> str:
    spec = get_spec(spec_name)
    text = (f'{options.mode}; cosine distance; same-identity same-camera gallery entries removed (torchreid '
            f'Market-1501 ranking, {ranker_description(options.ranker)})')
    if spec.add_query_to_gallery:
        text += f'; {spec.display_name} gallery = query + gallery'
    if input_note:
        text += f'; {input_note}'
    return text


def evaluate_split(
        module: nn.Module,
        dataset: str,
        root: str | Path,
        split: int,
        options: EvalOptions,
        *,
        device: torch.device,
        weights: str,
        transform: FramePreprocess,
        clip_len: int = 4,
        input_note: str = '',
) -> SplitResult | None:
    """Extract and rank one split; ``module`` is ready (eval mode, on ``device``). ``None`` on torchrun ranks > 0,
    which only extract their share of the shards."""
    t0 = time.perf_counter()
    data = load_dataset(dataset, root, split)
    t_load = time.perf_counter() - t0
    spec = get_spec(data.name)
    tracklets = list(data.query) + list(data.gallery)
    names = [os.path.relpath(paths[0], data.dataset_dir) for paths, _, _ in tracklets]
    plan = ExtractPlan.build(tracklets, options.mode, options.clip_len or clip_len, names)
    amp = resolve_amp(options.amp, device)
    cache = None
    if options.cache:  # keyed by everything that changes the features (reid_eval.cache)
        facts = {'mode': options.mode, 'clip_len': plan.clip_len, 'clips': plan.digest(),
                 'preprocessing': getattr(transform, 'data_config', None) or repr(transform), 'amp': amp,
                 'model_input': input_note or 'clips', 'dataset_dir': data.dataset_dir}
        cache = FeatureCache.open(Path(options.cache_dir or default_cache_dir()), weights=weights, dataset=data.name,
                                  split=split, mode=options.mode, num_clips=len(plan.clips),
                                  shard_clips=options.shard_clips, facts=facts)
    feats, stats = extract_features(
        module, plan, transform, cache, device, batch_clips=options.batch_clips, workers=options.workers, amp=amp,
        shard_clips=options.shard_clips, progress=options.progress)
    if feats is None:  # a non-zero rank: its shards are written
        return None
    evaluator = ReIDEvaluator(len(data.query), add_query_to_gallery=spec.add_query_to_gallery, ranker=options.ranker,
                              chunk=options.rank_chunk, device=device)
    evaluator.process(feats, [p for _, p, _ in tracklets], [c for _, _, c in tracklets], names)
    t1 = time.perf_counter()
    metrics, query, gallery = evaluator.evaluate()
    t_rank = time.perf_counter() - t1
    return SplitResult(
        split=split, metrics=metrics, protocol=_protocol(options, data.name, input_note),
        protocol_notes=data.protocol_notes, num_query=len(query), num_gallery=len(gallery),
        timings_s={'load_dataset': t_load, 'extract': stats.seconds, 'model': stats.model_seconds, 'rank': t_rank},
        frames=stats.frames, frames_per_s=stats.frames_per_s if stats.frames else None,
        cache={'folder': str(cache.folder) if cache else None, 'reused_shards': stats.cached_shards,
               'computed_shards': stats.computed_shards},
        amp=amp, query=query, gallery=gallery)


def _init_distributed(device: torch.device) -> tuple[torch.device, int]:
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world > 1 and not dist.is_initialized():
        if device.type == 'cuda':
            device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', '0')))
            torch.cuda.set_device(device)
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    return device, world


def evaluate(
        model: str | Path | nn.Module | LoadedModel | None,
        dataset: str,
        root: str | Path | None = None,
        options: EvalOptions | None = None,
        *,
        pretrained: bool = True,
        checkpoint: str | Path | None = None,
        seed: int | None = None,
        **overrides: Any,
) -> EvalResult | None:
    """Evaluate ``model`` on a benchmark under the released protocol (or the one ``options`` choose).

    Args:
        model: a zoo / timm / ``hf-hub:`` / ``local-dir:`` name (pretrained weights), a released ``.pth.tar``, any
            ``nn.Module`` mapping float clips ``(B, T, 3, H, W)`` to ``(B, D)``, a timm image model (evaluated per
            frame, frame embeddings averaged over each clip), or a :class:`~reid_eval.models.LoadedModel`.
        dataset: ``mars``, ``lsvid``, ``ilidsvid``, ``prid2011``, ``dukev`` (or an alias), or ``synthetic``.
        root: the folder holding the dataset folder (not needed for ``synthetic``).
        options: an :class:`EvalOptions`; ``**overrides`` replace its fields (``evaluate(m, 'mars', root,
            mode='sampled')``).
        pretrained, checkpoint, seed: how a named model gets its weights (see :func:`~reid_eval.models.load_model`);
            the model is loaded only after the dataset folder has been checked.

    Returns the :class:`~reid_eval.results.EvalResult` (``None`` on torchrun ranks > 0). Raises a
    :class:`~reid_eval.errors.SinetTimmError` subclass for anything the caller can fix.
    """
    options = dataclasses.replace(options or EvalOptions(), **overrides)
    options.validate()
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world > 1 and not options.cache:
        raise EvalError('torchrun runs share features through the cache: drop --no-cache')
    if str(dataset).lower() == SYNTHETIC:
        label, fmt, root = SYNTHETIC, 'mars', demo_dataset_root()
    else:
        label = fmt = get_spec(dataset).name
        if root is None:
            raise EvalError(f'--root is needed for {fmt}: the folder that holds the dataset folder')
    splits = options.splits(fmt)
    if isinstance(model, str) and checkpoint is None:
        check_model_name(model)  # a misspelt name is reported before the dataset is looked at
    device, world = _init_distributed(resolve_device(options.device))
    check_layout(fmt, root)  # a wrong root is reported before any weights are fetched
    loaded = load_model(model, pretrained=pretrained, checkpoint=checkpoint, seed=seed,
                        data_config=options.data_config)
    module = for_inference(loaded.module, device)
    weights = weights_sha256(module)
    transform = FramePreprocess.from_data_config(loaded.data_config)  # uint8 frames to the device, normalised there
    if options.compile:
        module = torch.compile(module, backend=options.compile)

    results = [evaluate_split(module, fmt, root, s, options, device=device, weights=weights, transform=transform,
                              clip_len=loaded.clip_len, input_note=loaded.input_note) for s in splits]
    if results[0] is None:
        return None
    mean = {k: statistics.fmean(r.metrics[k] for r in results) for k in METRIC_KEYS}
    std = {k: statistics.pstdev(r.metrics[k] for r in results) for k in METRIC_KEYS} if len(results) > 1 else None
    return EvalResult(
        model=loaded.name, weights=loaded.weights, weights_sha256=weights, architecture=loaded.architecture,
        input=loaded.input, dataset=label, dataset_format=fmt, root=str(Path(root).expanduser().resolve()),
        splits=splits, mode=options.mode, protocol=results[0].protocol, metrics=mean, metrics_std=std,
        paper=paper_metrics(loaded.architecture, fmt) if label != SYNTHETIC else {}, per_split=results,
        versions=versions(device), world_size=world, device=str(device),
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds'), random_weights=loaded.random_weights)


def extract(
        model: str | Path | nn.Module | LoadedModel,
        tracklets: Sequence[InputTracklet | Sequence[str | Path]],
        options: EvalOptions | None = None,
        **overrides: Any,
) -> torch.Tensor:
    """(N, D) embeddings of your own tracklets, one per tracklet, under the test protocol (dense by default: all
    frames, loop-padded 4-frame strided clips whose embeddings are averaged), exactly as ``sinet-extract``.

    ``tracklets``: :class:`~reid_eval.tracklets.InputTracklet` objects or lists of frame paths. The model is put in
    eval mode on the device in channels_last (see :func:`~reid_eval.models.for_inference`).
    """
    options = dataclasses.replace(options or EvalOptions(), **overrides)
    options.validate()
    frames = [list(t.frames) if isinstance(t, InputTracklet) else [str(p) for p in t] for t in tracklets]
    if not frames:
        raise EvalError('no tracklets to extract')
    loaded = load_model(model, data_config=options.data_config)
    device = resolve_device(options.device)
    module = for_inference(loaded.module, device)
    plan = ExtractPlan.build([(tuple(f), i, 0) for i, f in enumerate(frames)], options.mode,
                             options.clip_len or loaded.clip_len)
    feats, _ = extract_features(module, plan, FramePreprocess.from_data_config(loaded.data_config), None, device,
                                batch_clips=options.batch_clips, workers=options.workers,
                                amp=resolve_amp(options.amp, device), shard_clips=max(len(plan.clips), 1),
                                progress=options.progress)
    assert feats is not None  # a single process always gets the features
    return feats
