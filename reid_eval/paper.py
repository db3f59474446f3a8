"""The papers' reported numbers, to print beside ours.

Numbers of released checkpoints come from the zoo files (``hub_configs/*.yaml``: ``metrics.paper``, and
``metrics.paper_i2v`` for image-to-video where the paper gives it); numbers the papers report without a released
checkpoint are in the dataset's spec (``DatasetSpec.paper``, e.g. SINet's rank-1 on iLIDS-VID and PRID-2011,
Table 1).

A run of a zoo checkpoint on the dataset it was trained on gets that entry's numbers: two entries of one
architecture on one dataset (a VKD student and its teacher) have different numbers. Elsewhere (a checkpoint on
another dataset, weights from a file or a module) a run gets its architecture's numbers on the dataset, as the
paper's table row for that dataset (e.g. SINet's PRID-2011 rank-1 beside the MARS checkpoint, which is how
``sinet-eval`` has always shown it), when every source agrees on them; none when they disagree.
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
    if entry is not None and entry in entries and entries[entry]['dataset'] == spec.name:
        return _numbers(entries[entry], kind)
    if not arch:
        return {}
    if kind == 'paper' and arch in spec.paper:
        return dict(spec.paper[arch])
    found = [_numbers(e, kind) for e in entries.values() if e['architecture'] == arch and e['dataset'] == spec.name]
    found = [f for f in found if f]
    return found[0] if found and all(f == found[0] for f in found) else {}


def _numbers(entry: dict, kind: str) -> dict[str, float]:
    return {k: float(v) for k, v in ((entry.get('metrics') or {}).get(kind) or {}).items()}
