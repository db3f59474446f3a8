"""What an evaluation returns: embeddings, per-split results and the run's summary, as dataclasses.

:meth:`EvalResult.to_json` gives the results JSON that ``sinet-eval`` writes: the fields it always had (``metrics``
is the plain protocol's, now with mINP), plus the gallery rule, the query frames, and for ``--rerank`` / ``--aqe``
their parameters and their own metrics blocks (``metrics_rerank``, ``metrics_aqe``, ``metrics_aqe_rerank``).
"""
from __future__ import annotations

import platform
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import timm
import torch

__all__ = ['METRIC_KEYS', 'VARIANTS', 'Embeddings', 'EvalResult', 'SplitResult', 'model_label', 'versions']

METRIC_KEYS = ('mAP', 'rank1', 'rank5', 'rank10', 'rank20', 'mINP')
# post-processed results, reported beside the plain protocol: JSON key suffix -> row label
VARIANTS = {'aqe': '+ AQE', 'rerank': '+ rerank', 'aqe_rerank': '+ AQE + rerank'}


def model_label(summary: dict[str, Any]) -> str:
    """The model as every output of a run names it (``EvalResult.to_json()`` or its file): '(random weights)' added
    where it had no trained ones."""
    model = str(summary.get('model'))
    return f'{model} (random weights)' if summary.get('random_weights') else model


@dataclass
class Embeddings:
    """Tracklet embeddings with their identities and cameras, in the order they were ranked."""

    features: torch.Tensor  # (N, D) float32
    pids: torch.Tensor  # (N,) int64
    camids: torch.Tensor  # (N,) int64
    names: list[str]  # the tracklets' names (dataset tracklets: first frame, relative to the dataset folder)
    tracklet_ids: torch.Tensor  # (N,) index into the dataset's query list followed by its gallery list

    def __len__(self) -> int:
        return len(self.names)

    def __post_init__(self) -> None:
        n = self.features.shape[0]
        if not (len(self.pids) == len(self.camids) == len(self.names) == len(self.tracklet_ids) == n):
            raise ValueError(f'{n} embeddings need as many pids, camids, names and tracklet ids')


@dataclass
class SplitResult:
    """The result of one split: metrics (percent), what ran, how long, and the ranked embeddings."""

    split: int
    metrics: dict[str, Any]  # mAP, rank1/5/10/20, mINP (percent), num_valid_queries, cmc (percent per rank)
    protocol: str
    protocol_notes: str
    num_query: int
    num_gallery: int
    timings_s: dict[str, float]  # load_dataset, extract, model, rank
    frames: int
    frames_per_s: float | None
    cache: dict[str, Any]  # folder, reused_shards, computed_shards
    amp: str
    query: Embeddings | None = field(default=None, repr=False)
    gallery: Embeddings | None = field(default=None, repr=False)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # VARIANTS key -> metrics, as ``metrics``

    def to_json(self) -> dict[str, Any]:
        out = {
            'split': self.split, 'metrics': self.metrics, 'protocol': self.protocol,
            'protocol_notes': self.protocol_notes, 'num_query': self.num_query, 'num_gallery': self.num_gallery,
            'timings_s': self.timings_s, 'frames': self.frames, 'frames_per_s': self.frames_per_s,
            'cache': self.cache, 'amp': self.amp,
        }
        out.update({f'metrics_{k}': m for k, m in self.variants.items()})
        return out


@dataclass
class EvalResult:
    """A whole evaluation: the model and its weights, the dataset, the mean metrics over splits and each split."""

    model: str
    weights: str
    weights_sha256: str
    architecture: str | None
    input: str  # 'clips', or 'frames': an image model whose frame embeddings are averaged over each clip
    dataset: str  # as asked for ('synthetic' for the demo)
    dataset_format: str  # the benchmark whose layout and protocol were used
    root: str
    splits: list[int]
    mode: str
    protocol: str
    metrics: dict[str, float]  # mean over splits of METRIC_KEYS, percent
    metrics_std: dict[str, float] | None  # population std over splits (several splits only)
    paper: dict[str, float]  # the paper's numbers for this architecture and dataset ({} when none or random)
    per_split: list[SplitResult]
    versions: dict[str, str]
    world_size: int
    date: str
    device: str = 'cpu'
    random_weights: bool = False
    gallery_rule: dict[str, Any] = field(default_factory=dict)  # query_added, setting (auto/yes/no), released_rule,
    # description (as the protocol line states it)
    query_frames: int | None = None  # image-to-video: frames per query (None: whole tracklets)
    rerank: dict[str, Any] | None = None  # re-ranking parameters, when metrics_rerank was computed
    aqe: dict[str, Any] | None = None  # AQE parameters, when metrics_aqe was computed
    variants: dict[str, dict[str, float]] = field(default_factory=dict)  # VARIANTS key -> mean metrics over splits
    variants_std: dict[str, dict[str, float] | None] | None = None  # their std over splits (several splits only)

    @property
    def query(self) -> Embeddings | None:
        """The query embeddings of the first split."""
        return self.per_split[0].query

    @property
    def gallery(self) -> Embeddings | None:
        """The gallery embeddings (as ranked) of the first split."""
        return self.per_split[0].gallery

    def to_json(self, features_files: dict[int, str] | None = None, cmc_plot: str | None = None) -> dict[str, Any]:
        """The results JSON; ``features_files`` (split -> file name) and ``cmc_plot`` record files written beside
        it."""
        per_split = []
        for s in self.per_split:
            entry = s.to_json()
            if features_files and s.split in features_files:
                entry['features_file'] = features_files[s.split]
            per_split.append(entry)
        out: dict[str, Any] = {
            'model': self.model, 'weights': self.weights, 'weights_sha256': self.weights_sha256,
            'architecture': self.architecture, 'input': self.input, 'dataset': self.dataset,
            'dataset_format': self.dataset_format, 'root': self.root, 'splits': self.splits, 'mode': self.mode,
            'protocol': self.protocol, 'metrics': self.metrics, 'metrics_std': self.metrics_std,
            'paper': self.paper, 'per_split': per_split, 'versions': self.versions, 'world_size': self.world_size,
            'date': self.date, 'device': self.device, 'random_weights': self.random_weights,
            'gallery_rule': self.gallery_rule, 'query_frames': self.query_frames, 'rerank': self.rerank,
            'aqe': self.aqe,
        }
        for k, m in self.variants.items():  # beside the plain metrics, never in their place
            out[f'metrics_{k}'] = m
            out[f'metrics_{k}_std'] = (self.variants_std or {}).get(k)
        if features_files and len(self.per_split) == 1:
            out['features_file'] = next(iter(features_files.values()))
        if cmc_plot:
            out['cmc_plot'] = cmc_plot
        return out


def versions(device: torch.device | None = None) -> dict[str, str]:
    """Versions of what computed a result (and the device it ran on)."""
    out = {'python': platform.python_version(), 'torch': str(torch.__version__), 'timm': str(timm.__version__)}
    for dist_name, key in (('torchreid', 'torchreid'), ('sinet-timm', 'sinet_timm')):
        try:
            out[key] = version(dist_name)
        except PackageNotFoundError:  # not installed as a distribution
            pass
    if device is not None:
        out['device'] = torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'
    return out
