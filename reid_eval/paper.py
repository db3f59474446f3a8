"""The papers' reported numbers, to print beside ours.

Numbers of released checkpoints come from the zoo files (``hub_configs/*.yaml``: ``metrics.paper``, and
``metrics.paper_i2v`` for image-to-video where the paper gives it); numbers the papers report without a released
checkpoint are in the dataset's spec (``DatasetSpec.paper``, e.g. SINet's rank-1 on iLIDS-VID and PRID-2011,
Table 1).

A run of a zoo checkpoint gets that entry's numbers only, and only on the dataset it was trained on: two entries
of one architecture on one dataset (a VKD student and its teacher) have different numbers, and a MARS checkpoint
evaluated on iLIDS-VID is not what the paper's iLIDS-VID row measured. Weights of unknown origin (a file, a
module) get the numbers of their architecture on the dataset when every source agrees on them.
"""
from __future__ import annotations

from sinet_timm._zoo import zoo_entries

from .datasets import get_spec

__all__ = ['PAPER_KINDS', 'paper_metrics']

PAPER_KINDS = ('paper', 'paper_i2v')  # video-to-video (whole query tracklets), image-to-video (one query frame)


def paper_metrics(arch: str | None, dataset: str, entry: str | None = None, kind: str = 'paper') -> dict[str, float]:
    """The paper's metrics (in %) of ``kind`` for the zoo ``entry`` (e.g. ``vkd_r50.mars_base``) or, without one,
    for an architecture on a dataset; {} when there are none or the sources disagree."""
    if kind not in PAPER_KINDS:
        raise ValueError(f'kind must be one of {PAPER_KINDS}, got {kind!r}')
    spec = get_spec(dataset)
    entries = zoo_entries()
    if entry is not None and entry in entries:
        e = entries[entry]
        return _numbers(e, kind) if e['dataset'] == spec.name else {}
    if not arch:
        return {}
    if kind == 'paper' and arch in spec.paper:
        return dict(spec.paper[arch])
    found = [_numbers(e, kind) for e in entries.values() if e['architecture'] == arch and e['dataset'] == spec.name]
    found = [f for f in found if f]
    return found[0] if found and all(f == found[0] for f in found) else {}


def _numbers(entry: dict, kind: str) -> dict[str, float]:
    return {k: float(v) for k, v in ((entry.get('metrics') or {}).get(kind) or {}).items()}
