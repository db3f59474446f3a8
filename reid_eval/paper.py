"""The paper's reported numbers, to print beside ours.

MARS and LS-VID numbers of the released checkpoints come from the zoo files (``hub_configs/*.yaml``,
``metrics.paper``: Table 1 for SINet, Table 2 for SBNet/IDNet). The paper reports rank-1 only for SINet on the
small datasets (Table 1): iLIDS-VID 92.5, PRID-2011 96.5.
"""
from __future__ import annotations

_SMALL_DATASETS = {
    ('sinet_r50', 'ilidsvid'): {'rank1': 92.5},
    ('sinet_r50', 'prid2011'): {'rank1': 96.5},
}


def paper_metrics(arch: str | None, dataset: str) -> dict[str, float]:
    """The paper's metrics (in %) for an architecture on a dataset, or {} when the paper has none."""
    if not arch:
        return {}
    if (arch, dataset) in _SMALL_DATASETS:
        return dict(_SMALL_DATASETS[(arch, dataset)])
    from sinet_timm._zoo import zoo_entries

    for e in zoo_entries().values():
        if e['architecture'] == arch and e['dataset'] == dataset:
            return {k: float(v) for k, v in ((e.get('metrics') or {}).get('paper') or {}).items()}
    return {}
