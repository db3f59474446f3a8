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
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from ._checks import is_int
from .cache import CacheWarning, FeatureCache, default_cache_dir
from .datasets import check_layout, get_spec, load_dataset
from .errors import EvalError
from .extraction import (
    AMP_CHOICES,
    ExtractPlan,
    ExtractStats,
    FrameImage,
    FramePreprocess,
    extract_features,
    resolve_amp,
)
from .models import (
    LoadedModel,
    check_model_name,
    computation_key,
    for_inference,
    load_model,
    takes_cameras,
    weights_sha256,
)
from .onnx_model import OnnxModel
from .paper import paper_metrics
from .postprocess import AQEOptions, RerankOptions, average_query_expansion, k_reciprocal_distances
from .protocol import MODES, PROTOCOLS, Protocol, get_protocol, query_frames
from .ranking import RANKERS, rank_distances, rank_metrics, ranker_description
from .results import METRIC_KEYS, VARIANTS, Embeddings, EvalResult, SplitResult, versions
from .synthetic import demo_dataset_root
from .tracklets import InputTracklet

__all__ = ['GALLERY_RULES', 'SYNTHETIC', 'EvalOptions', 'ReIDEvaluator', 'evaluate', 'evaluate_split', 'extract',
           'gallery_description', 'rank', 'rank_variants', 'resolve_device']

SYNTHETIC = 'synthetic'  # the demo dataset: a small generated MARS-format set (no --root needed)
GALLERY_RULES = ('auto', 'yes', 'no')  # --add-query-to-gallery: auto is the protocol's released rule
CAMERA_FALLBACKS = (None, 'mean')  # what a camera-taking model gets without camera ids: an error, or its mean camera


@dataclass
class EvalOptions:
    """How to evaluate: the protocol and how to run it. The defaults are ``sinet-eval``'s (the released protocol)."""

    protocol: str = 'auto'  # auto: the model's own (pretrained_cfg['protocol'], default dense); or a PROTOCOLS name
    mode: str | None = None  # the protocol's old name, kept for scripts: dense, sampled (or any PROTOCOLS name)
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
    add_query_to_gallery: str | bool = 'auto'  # auto: the released rule (MARS yes, the others no); yes / no
    query_frames: int | None = None  # image-to-video: each query from this many evenly spaced frames (None: all)
    rerank: RerankOptions | None = None  # also report k-reciprocal re-ranked metrics (a separate result)
    aqe: AQEOptions | None = None  # also report metrics after average query expansion (a separate result)
    camera_fallback: str | None = None  # a model that takes camera ids gets them; 'mean': its mean camera instead

    def validate(self) -> None:
        """Raise :class:`EvalError` for an option that cannot work, naming the command-line flag."""
        if self.mode is not None and self.mode not in MODES:
            raise EvalError(f'--mode must be one of {", ".join(MODES)}, got {self.mode!r}')
        if self.protocol != 'auto' and self.protocol not in PROTOCOLS:
            raise EvalError(f'--protocol must be auto or one of {", ".join(PROTOCOLS)}, got {self.protocol!r}')
        if self.mode is not None and self.protocol != 'auto' and self.mode != self.protocol:
            raise EvalError(f'--mode {self.mode} and --protocol {self.protocol} disagree: give one of them')
        if self.camera_fallback not in CAMERA_FALLBACKS:
            raise EvalError(f'--camera-fallback must be one of {", ".join(map(str, CAMERA_FALLBACKS))}, got '
                            f'{self.camera_fallback!r}')
        for flag, value, what in (('--batch-clips', self.batch_clips, 'a positive number of clips'),
                                  ('--workers', self.workers, '>= 0 (0 decodes in the main process)'),
                                  ('--shard-clips', self.shard_clips, 'a positive number of clips'),
                                  ('--rank-chunk', self.rank_chunk, 'a positive number of queries'),
                                  ('clip_len', self.clip_len, 'a positive number of frames')):
            if value is None and flag in ('--batch-clips', 'clip_len'):
                continue
            if not (is_int(value) and value >= (0 if flag == '--workers' else 1)):
                raise EvalError(f'{flag} must be {what}, got {value!r}' + ('' if is_int(value) else ' (an integer)'))
        if self.amp not in AMP_CHOICES:
            raise EvalError(f'--amp must be one of {", ".join(AMP_CHOICES)}, got {self.amp!r}')
        if self.ranker not in RANKERS:
            raise EvalError(f'--ranker must be one of {", ".join(RANKERS)}, got {self.ranker!r}')
        if not isinstance(self.add_query_to_gallery, bool) and self.add_query_to_gallery not in GALLERY_RULES:
            raise EvalError(f'--add-query-to-gallery must be one of {", ".join(GALLERY_RULES)}, got '
                            f'{self.add_query_to_gallery!r}')
        if self.query_frames is not None and not (is_int(self.query_frames) and self.query_frames >= 1):
            raise EvalError(f'--query-frames must be a positive number of frames, got {self.query_frames!r}')
        for name, kind in (('rerank', RerankOptions), ('aqe', AQEOptions)):
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise EvalError(f'{name} must be a {kind.__name__} or None, got {value!r}')
            if value is not None:
                value.validate()

    def resolved(self, module: nn.Module | None = None) -> EvalOptions:
        """These options with the protocol decided: the one asked for (``protocol``, or ``mode``), else the one
        ``module``'s pretrained cfg names, else ``dense``. ``mode`` and ``protocol`` then both hold its name."""
        name = self.protocol if self.protocol != 'auto' else self.mode
        if name is None:
            cfg = getattr(getattr(module, '_orig_mod', module), 'pretrained_cfg', None) or {}
            name = cfg.get('protocol') or 'dense'
        get_protocol(name)  # a model's cfg naming an unknown protocol is said here
        return dataclasses.replace(self, protocol=name, mode=name)

    @property
    def test_protocol(self) -> Protocol:
        """The :class:`~reid_eval.protocol.Protocol` these options run (``dense`` until resolved)."""
        return get_protocol(self.mode or (self.protocol if self.protocol != 'auto' else 'dense'))

    def adds_query_to_gallery(self, dataset: str) -> bool:
        """Whether the queries are ranked against query + gallery on ``dataset`` (``auto``: as the protocol's
        release does: the dataset's rule for SINet's and VKD's, always for TF-CLIP's)."""
        rule = self.add_query_to_gallery
        if isinstance(rule, bool):
            return rule
        if rule == 'auto':
            return True if self.test_protocol.gallery == 'yes' else get_spec(dataset).add_query_to_gallery
        return rule == 'yes'

    @property
    def gallery_setting(self) -> str:
        """``add_query_to_gallery`` as the command line writes it: auto, yes or no."""
        rule = self.add_query_to_gallery
        return ('yes' if rule else 'no') if isinstance(rule, bool) else rule

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
    ``add_query_to_gallery`` (MARS, as released) the queries are ranked against query + gallery. ``rerank`` and
    ``aqe`` add post-processed results (:meth:`evaluate_variants`), each apart from the plain one.
    """

    def __init__(self, num_query: int, *, add_query_to_gallery: bool = False, ranker: str = 'numpy',
                 chunk: int = 256, device: torch.device | str = 'cpu', rerank: RerankOptions | None = None,
                 aqe: AQEOptions | None = None):
        self.num_query, self.add_query_to_gallery = num_query, add_query_to_gallery
        self.ranker, self.chunk, self.device = ranker, chunk, device
        self.rerank, self.aqe = rerank, aqe
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

    def evaluate_variants(self, query: Embeddings, gallery: Embeddings) -> tuple[dict[str, dict[str, Any]],
                                                                                 dict[str, float]]:
        """The post-processed results of the ranked ``query`` and ``gallery`` (what :meth:`evaluate` returns): see
        :func:`rank_variants`."""
        return rank_variants(query, gallery, rerank=self.rerank, aqe=self.aqe, ranker=self.ranker, chunk=self.chunk,
                             device=self.device)


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


def rank_variants(
        query: Embeddings, gallery: Embeddings, *, rerank: RerankOptions | None = None, aqe: AQEOptions | None = None,
        ranker: str = 'numpy', chunk: int = 256, device: torch.device | str = 'cpu',
) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Metrics of the post-processed rankings, by label (:data:`reid_eval.results.VARIANTS`): ``aqe`` (average query
    expansion, then cosine distance), ``rerank`` (k-reciprocal re-ranking of the plain embeddings) and, with both,
    ``aqe_rerank`` (re-ranking of the expanded embeddings, fast-reid's order); and the seconds each took. The
    gallery rule, junk removal and metrics are the plain protocol's (:func:`rank`)."""
    ids = (query.pids.numpy(), query.camids.numpy(), gallery.pids.numpy(), gallery.camids.numpy())
    metrics: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    expanded = None
    if aqe is not None:
        t = time.perf_counter()
        expanded = average_query_expansion(query.features, gallery.features, aqe.k, aqe.alpha, chunk=chunk,
                                           device=device)
        metrics['aqe'] = rank_metrics(*expanded, *ids, chunk=chunk, device=device, ranker=ranker)
        seconds['aqe'] = time.perf_counter() - t
    if rerank is not None:
        inputs = {'rerank': (query.features, gallery.features)}
        if expanded is not None:
            inputs['aqe_rerank'] = expanded
        for label, (qf, gf) in inputs.items():
            t = time.perf_counter()
            dist = k_reciprocal_distances(qf, gf, rerank.k1, rerank.k2, rerank.lambda_value, chunk=chunk,
                                          device=device)
            metrics[label] = rank_distances(dist, *ids, chunk=chunk, ranker=ranker)
            seconds[label] = time.perf_counter() - t
    return {k: metrics[k] for k in VARIANTS if k in metrics}, seconds


def gallery_description(dataset: str, add_query: bool, released: bool | None = None) -> str:
    """The gallery rule as every output states it, e.g. ``'MARS gallery = query + gallery'``; a rule other than the
    released one (``released``: the protocol's rule; default the dataset's) says so."""
    spec = get_spec(dataset)
    text = f'{spec.display_name} gallery = ' + ('query + gallery' if add_query else 'gallery only (query not added)')
    if add_query != (spec.add_query_to_gallery if released is None else released):
        text += ' (not the released rule)'
    return text


def _query_frames_note(n: int, rule: str = 'middle') -> str:
    if rule == 'first':
        each = ("1 frame each (the first one, VKD's rule)" if n == 1 else
                f'{n} frames each (the first of each of {n} segments)')
    else:
        each = '1 frame each (the middle one)' if n == 1 else f'{n} evenly spaced frames each'
    return f'image-to-video: queries from {each}, gallery tracklets whole'


def _published_kind(options: EvalOptions, module: nn.Module, dataset: str) -> str | None:
    """Which published numbers a run is comparable with: ``'paper'`` under the model's own protocol (the one its
    cfg names; for the SINet release also its quick ``sampled`` mode, as before) with the released gallery rule,
    whole-tracklet queries and the model's own camera ids; ``'paper_i2v'`` for the same with one query frame
    (image-to-video as that protocol defines it); None otherwise (no paper numbers are printed beside it)."""
    own = dataclasses.replace(options, protocol='auto', mode=None).resolved(module).mode
    same = options.mode == own or (own, options.mode) == ('dense', 'sampled')  # sampled: the SINet release's quick mode
    if not (same and options.adds_query_to_gallery(dataset) == _released_gallery(options, dataset)
            and options.camera_fallback is None):
        return None
    return 'paper' if not options.query_frames else 'paper_i2v' if options.query_frames == 1 else None


def _paper(loaded: LoadedModel, options: EvalOptions, dataset: str) -> dict[str, float]:
    """The published numbers to print beside a run ({} when it is not comparable with them)."""
    kind = _published_kind(options, loaded.module, dataset)
    return paper_metrics(loaded.architecture, dataset, loaded.zoo_entry, kind) if kind else {}


def _released_gallery(options: EvalOptions, dataset: str) -> bool:
    """Whether the protocol's release adds the queries to the gallery on ``dataset``."""
    return dataclasses.replace(options, add_query_to_gallery='auto').adds_query_to_gallery(dataset)


def _protocol(options: EvalOptions, spec_name: str, input_note: str) -> str:
    p = options.test_protocol
    text = p.name if p.name in ('dense', 'sampled') else p.describe()  # SINet's text as it always was
    text += (f'; {p.distance}; same-identity same-camera gallery entries removed (torchreid '
             f'Market-1501 ranking, {ranker_description(options.ranker)})')
    gallery = gallery_description(spec_name, options.adds_query_to_gallery(spec_name),
                                  _released_gallery(options, spec_name))
    text += f'; {gallery}'
    if options.query_frames:
        text += f'; {_query_frames_note(options.query_frames, p.query_frame)}'
    if input_note:
        text += f'; {input_note}'
    return text


def _extract(module: nn.Module, plan: ExtractPlan, options: EvalOptions, *, cache_mode: str, data: Any, split: int,
             weights: str, transform: FramePreprocess, device: torch.device, amp: str, input_note: str, label: str
             ) -> tuple[torch.Tensor | None, ExtractStats, FeatureCache | None]:
    """Features of ``plan`` through the cache folder keyed by everything that changes them (reid_eval.cache)."""
    cache = None
    computation, why = computation_key(getattr(module, '_orig_mod', module)) if options.cache else (None, '')
    if options.cache and computation is None:
        if int(os.environ.get('WORLD_SIZE', '1')) > 1:
            raise EvalError(f'torchrun ranks share features through the cache, which cannot key '
                            f'{type(module).__name__} ({why}): give the module a `cache_key` string naming its '
                            'computation')
        warnings.warn(f'{type(module).__name__}: features are not cached because what computes them cannot be '
                      f'identified ({why}); give the module a `cache_key` string naming its computation to cache '
                      'them', CacheWarning, stacklevel=3)
    elif options.cache:
        facts = {'computation': computation, 'mode': cache_mode, 'clip_len': plan.clip_len, 'clips': plan.digest(),
                 'preprocessing': getattr(transform, 'data_config', None) or repr(transform), 'amp': amp,
                 'model_input': input_note or 'clips', 'dataset_dir': data.dataset_dir}
        cache = FeatureCache.open(Path(options.cache_dir or default_cache_dir()), weights=weights, dataset=data.name,
                                  split=split, mode=cache_mode, num_clips=len(plan.clips),
                                  shard_clips=options.shard_clips, facts=facts)
    feats, stats = extract_features(
        module, plan, transform, cache, device, batch_clips=options.batch_clips, workers=options.workers, amp=amp,
        shard_clips=options.shard_clips, progress=options.progress, label=label)
    return feats, stats, cache


def camera_ids_needed(module: nn.Module, options: EvalOptions, camids: Sequence[int], what: str) -> bool:
    """Whether ``module`` gets the camera ids of the tracklets: yes when it takes them and no fallback was asked
    for; camera ids it has no embedding for are an :class:`EvalError`."""
    if not takes_cameras(module) or options.camera_fallback is not None:
        return False
    if bad := [c for c in camids if not (is_int(c) and c >= 0)]:
        raise EvalError(f'camera ids must be integers >= 0, got {bad[:5]!r}')
    inner = getattr(module, '_orig_mod', module)
    # the model's own count (a model built with num_cameras=N keeps its tag's cfg), else what its cfg declares
    own = getattr(inner, 'num_cameras', None)
    known = own if isinstance(own, int) else inner.pretrained_cfg.get('num_cameras')
    if known is not None and camids and max(camids) >= known:
        raise EvalError(f'{what} has camera ids up to {max(camids)}, but the model has embeddings for {known} '
                        f'cameras (0..{known - 1}), those of the dataset it was trained on: evaluate it on that '
                        "dataset, or use its mean camera embedding for every tracklet (--camera-fallback mean)")
    return True


def apply_camera_fallback(module: nn.Module, options: EvalOptions) -> None:
    """Tell a camera-taking model to use its mean camera embedding (``camera_fallback = 'mean'``) when the
    options ask for it."""
    if options.camera_fallback is not None and takes_cameras(module):
        getattr(module, '_orig_mod', module).camera_fallback = options.camera_fallback


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
        label: str = '',
) -> SplitResult | None:
    """Extract and rank one split; ``module`` is ready (eval mode, on ``device``). ``None`` on torchrun ranks > 0,
    which only extract their share of the shards.

    Every tracklet is embedded under ``options.mode`` (the features the default protocol caches). With
    ``query_frames`` the queries are embedded again from their evenly spaced frames (a small plan with its own
    cache folder) and ranked with those; the copies of the queries that the gallery rule adds stay whole."""
    t0 = time.perf_counter()
    data = load_dataset(dataset, root, split)
    t_load = time.perf_counter() - t0
    options = options.resolved(module)
    add_query = options.adds_query_to_gallery(data.name)
    clip_len = options.clip_len or options.test_protocol.clip_len or clip_len
    tracklets = list(data.query) + list(data.gallery)
    names = [os.path.relpath(paths[0], data.dataset_dir) for paths, _, _ in tracklets]
    cameras = camera_ids_needed(module, options, [c for _, _, c in tracklets], data.name)
    plan = ExtractPlan.build(tracklets, options.mode, clip_len, names, cameras=cameras)
    amp = resolve_amp(options.amp, device)
    common = dict(data=data, split=split, weights=weights, transform=transform, device=device, amp=amp,
                  input_note=input_note)
    feats, stats, cache = _extract(module, plan, options, cache_mode=options.mode, label=label or data.name, **common)
    query_cache = None
    nq = len(data.query)
    if options.query_frames:
        n, rule = options.query_frames, options.test_protocol.query_frame
        short = [(tuple(query_frames(paths, n, rule)), pid, camid) for paths, pid, camid in data.query]
        qplan = ExtractPlan.build(short, options.mode, clip_len, names[:nq], cameras=cameras)
        qmode = f'{options.mode}-query{n}' + ('' if rule == 'middle' else f'-{rule}')  # its own cache folder
        qfeats, qstats, query_cache = _extract(module, qplan, options, cache_mode=qmode,
                                               label=f'{label or data.name}, queries from {n} frame(s)', **common)
        for k in ('frames', 'clips', 'seconds', 'model_seconds', 'cached_shards', 'computed_shards'):
            setattr(stats, k, getattr(stats, k) + getattr(qstats, k))
    if feats is None:  # a non-zero rank: its shards are written
        return None
    pids, camids = [p for _, p, _ in tracklets], [c for _, _, c in tracklets]
    evaluator = ReIDEvaluator(nq, add_query_to_gallery=add_query and not options.query_frames, ranker=options.ranker,
                              chunk=options.rank_chunk, device=device, rerank=options.rerank, aqe=options.aqe)
    if options.query_frames:
        evaluator.process(qfeats, pids[:nq], camids[:nq], names[:nq])
        if add_query:  # the gallery's copies of the queries: the whole tracklets
            evaluator.process(feats[:nq], pids[:nq], camids[:nq], names[:nq], tracklet_ids=range(nq))
        evaluator.process(feats[nq:], pids[nq:], camids[nq:], names[nq:], tracklet_ids=range(nq, len(tracklets)))
    else:
        evaluator.process(feats, pids, camids, names)
    t1 = time.perf_counter()
    metrics, query, gallery = evaluator.evaluate()
    t_rank = time.perf_counter() - t1
    variants, variant_seconds = evaluator.evaluate_variants(query, gallery)
    timings = {'load_dataset': t_load, 'extract': stats.seconds, 'model': stats.model_seconds, 'rank': t_rank}
    timings.update({f'rank_{k}': v for k, v in variant_seconds.items()})
    cache_info = {'folder': str(cache.folder) if cache else None, 'reused_shards': stats.cached_shards,
                  'computed_shards': stats.computed_shards}
    if options.query_frames:
        cache_info['query_folder'] = str(query_cache.folder) if query_cache else None
    return SplitResult(
        split=split, metrics=metrics, protocol=_protocol(options, data.name, input_note),
        protocol_notes=data.protocol_notes, num_query=len(query), num_gallery=len(gallery), timings_s=timings,
        frames=stats.frames, frames_per_s=stats.frames_per_s if stats.frames else None, cache=cache_info,
        amp=amp, query=query, gallery=gallery, variants=variants)


def _init_distributed(device: torch.device) -> tuple[torch.device, int]:
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world > 1 and not dist.is_initialized():
        if device.type == 'cuda':
            device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', '0')))
            torch.cuda.set_device(device)
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    return device, world


def resolve_dataset(dataset: str, root: str | Path | None) -> tuple[str, str, Path]:
    """``(label, format, root)`` of a dataset name: ``synthetic`` is the generated demo set in MARS format (no root
    needed); any other name needs the folder that holds the dataset folder."""
    if str(dataset).lower() == SYNTHETIC:
        return SYNTHETIC, 'mars', demo_dataset_root()
    fmt = get_spec(dataset).name
    if root is None:
        raise EvalError(f'--root is needed for {fmt}: the folder that holds the dataset folder')
    return fmt, fmt, Path(root)


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
    label, fmt, root = resolve_dataset(dataset, root)
    splits = options.splits(fmt)
    if isinstance(model, str) and checkpoint is None:
        check_model_name(model)  # a misspelt name is reported before the dataset is looked at
    device, world = _init_distributed(resolve_device(options.device))
    check_layout(fmt, root)  # a wrong root is reported before any weights are fetched
    loaded = load_model(model, pretrained=pretrained, checkpoint=checkpoint, seed=seed,
                        data_config=options.data_config)
    options = options.resolved(loaded.module)
    apply_camera_fallback(loaded.module, options)
    module = for_inference(loaded.module, device)
    weights = weights_sha256(module)
    transform = FramePreprocess.from_data_config(loaded.data_config)  # uint8 frames to the device, normalised there
    if isinstance(loaded.module, OnnxModel):  # the runtime and provider that run the file on this device
        if options.compile:
            raise EvalError('--compile compiles PyTorch models; an ONNX file runs in onnxruntime: drop --compile')
        loaded.weights = loaded.module.weights_label(device)
    if options.compile:
        module = torch.compile(module, backend=options.compile)

    results = [evaluate_split(module, fmt, root, s, options, device=device, weights=weights, transform=transform,
                              clip_len=loaded.clip_len, input_note=loaded.input_note,
                              label=f'{fmt} split {s}' + (f' ({k + 1}/{len(splits)})' if len(splits) > 1 else ''))
               for k, s in enumerate(splits)]
    if results[0] is None:
        return None
    mean, std = _mean_std([r.metrics for r in results])
    variants, variants_std = {}, {}
    for v in results[0].variants:
        variants[v], variants_std[v] = _mean_std([r.variants[v] for r in results])
    add_query = options.adds_query_to_gallery(fmt)
    return EvalResult(
        model=loaded.name, weights=loaded.weights, weights_sha256=weights, architecture=loaded.architecture,
        input=loaded.input, dataset=label, dataset_format=fmt, root=str(Path(root).expanduser().resolve()),
        splits=splits, mode=options.mode, protocol=results[0].protocol, metrics=mean, metrics_std=std,
        # no paper numbers beside random weights or the demo data: they would compare nothing with something
        paper=_paper(loaded, options, fmt) if label != SYNTHETIC and not loaded.random_weights else {},
        per_split=results,
        versions=versions(device), world_size=world, device=str(device),
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds'), random_weights=loaded.random_weights,
        gallery_rule={'query_added': add_query, 'setting': options.gallery_setting,
                      'released_rule': add_query == _released_gallery(options, fmt),
                      'description': gallery_description(fmt, add_query, _released_gallery(options, fmt))},
        query_frames=options.query_frames,
        rerank=options.rerank.to_json() if options.rerank else None,
        aqe=options.aqe.to_json() if options.aqe else None,
        variants=variants, variants_std=variants_std if len(results) > 1 else None)


def _mean_std(metrics: Sequence[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float] | None]:
    """Mean and population std over splits of the metrics (std only for several splits)."""
    keys = [k for k in METRIC_KEYS if all(k in m for m in metrics)]
    mean = {k: statistics.fmean(m[k] for m in metrics) for k in keys}
    std = {k: statistics.pstdev(m[k] for m in metrics) for k in keys} if len(metrics) > 1 else None
    return mean, std


def extract(
        model: str | Path | nn.Module | LoadedModel,
        tracklets: Sequence[InputTracklet | Sequence[str | Path | FrameImage]],
        options: EvalOptions | None = None,
        *,
        camids: Sequence[int] | None = None,
        **overrides: Any,
) -> torch.Tensor:
    """(N, D) embeddings of your own tracklets, one per tracklet, under the test protocol (the model's own, dense
    for the SINet family: all frames, loop-padded 4-frame strided clips whose embeddings are averaged), exactly as
    ``sinet-extract``.

    ``camids``: each tracklet's camera id, for models that take them (TF-CLIP; also ``InputTracklet.camid``); such
    a model without them is an :class:`EvalError` unless ``camera_fallback='mean'``.

    ``tracklets``: :class:`~reid_eval.tracklets.InputTracklet` objects, lists of frame paths, or lists of in-memory
    frames (crops): PIL images, (H, W, 3) uint8 RGB arrays, uint8 tensors (3, H, W) or (H, W, 3), or float tensors
    (3, H, W) in [0, 1] (see :func:`~reid_eval.extraction.frame_image_to_pil`); a (T, H, W, 3) array or a
    (T, 3, H, W) tensor is a list of T frames. A tracklet is either paths or in-memory frames. In-memory frames are
    turned into the PIL image that reading the same pixels from a file gives and preprocessed from there, so they
    embed exactly like the same frames saved as image files (lossless formats: PNG, BMP, TIFF) with names that sort
    in temporal order (``000001.png ...``: the protocol sorts the padded frame list by name, and in-memory frames
    by position). The model is put in eval mode on the device in channels_last (see
    :func:`~reid_eval.models.for_inference`).
    """
    options = dataclasses.replace(options or EvalOptions(), **overrides)
    options.validate()
    frames = [_frame_list(t.frames if isinstance(t, InputTracklet) else t) for t in tracklets]
    if not frames:
        raise EvalError('no tracklets to extract')
    names = [t.name if isinstance(t, InputTracklet) else f'#{i}' for i, t in enumerate(tracklets)]
    # planned (and the frames checked) before the model is loaded, which may download weights; planned again in
    # the rare case that the model's clip length is not the family's 4
    if camids is not None and len(camids) != len(frames):
        raise EvalError(f'{len(camids)} camera ids for {len(frames)} tracklets: give one per tracklet')
    cams = list(camids) if camids is not None else [getattr(t, 'camid', None) for t in tracklets]
    guess = options.clip_len or (model.clip_len if isinstance(model, LoadedModel) else 4)
    plan = ExtractPlan.build([(f, i, 0) for i, f in enumerate(frames)], options.mode or 'dense', guess, names)
    loaded = load_model(model, data_config=options.data_config)
    options = options.resolved(loaded.module)
    apply_camera_fallback(loaded.module, options)
    cameras = takes_cameras(loaded.module) and options.camera_fallback is None
    if cameras and None in cams:
        raise EvalError(f'{loaded.name} takes camera ids and {cams.count(None)} of {len(cams)} tracklets have none: '
                        'give each its camera (camids=..., InputTracklet.camid; sinet-extract --camera N), or use '
                        "the model's mean camera embedding (camera_fallback='mean'; --camera-fallback mean)")
    clip_len = options.clip_len or options.test_protocol.clip_len or loaded.clip_len
    tracks = [(f, i, c if cameras else 0) for i, (f, c) in enumerate(zip(frames, cams, strict=True))]
    if cameras:
        camera_ids_needed(loaded.module, options, cams, 'the input')
    if clip_len != plan.clip_len or options.mode != plan.mode or cameras:
        plan = ExtractPlan.build(tracks, options.mode, clip_len, names, cameras=cameras)
    device = resolve_device(options.device)
    module = for_inference(loaded.module, device)
    feats, _ = extract_features(module, plan, FramePreprocess.from_data_config(loaded.data_config), None, device,
                                batch_clips=options.batch_clips, workers=options.workers,
                                amp=resolve_amp(options.amp, device), shard_clips=max(len(plan.clips), 1),
                                progress=options.progress)
    assert feats is not None  # a single process always gets the features
    return feats


def _frame_list(frames: Any) -> list[Any]:
    """A tracklet's frames as a list: paths as ``str``, in-memory frames as they are."""
    return [os.fspath(f) if isinstance(f, (str, os.PathLike)) else f for f in frames]

