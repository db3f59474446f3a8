"""The papers' reported numbers, to print beside ours.

Numbers of released checkpoints come from the zoo files (``hub_configs/*.yaml``, ``metrics.paper``); numbers the
papers report without a released checkpoint are in the dataset's spec (``DatasetSpec.paper``, e.g. SINet's
rank-1 on iLIDS-VID and PRID-2011, Table 1).
"""
from __future__ import annotations

from sinet_timm._zoo import zoo_entries

from .datasets import get_spec

__all__ = ['paper_metrics']


def paper_metrics(arch: str | None, dataset: str) -> dict[str, float]:
    """The paper's metrics (in %) for an architecture on a dataset, or {} when the paper has none."""
    if not arch:
        return {}
    spec = get_spec(dataset)
    if arch in spec.paper:
        return dict(spec.paper[arch])
    for e in zoo_entries().values():
        if e['architecture'] == arch and e['dataset'] == spec.name:
            return {k: float(v) for k, v in ((e.get('metrics') or {}).get('paper') or {}).items()}
    return {}
