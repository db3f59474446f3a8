"""Several evaluation runs in one table (``sinet-eval --compare``): model, dataset, split(s), protocol and metrics.

Each results JSON gives a row for its plain protocol and one per post-processed result it holds (``+ AQE``,
``+ rerank``, ``+ AQE + rerank``). The protocol column sums up what the numbers depend on: the test mode, the
gallery rule, image-to-video query frames, and the re-ranking / AQE parameters. Results JSONs written before mINP,
the gallery rule or the post-processing were recorded still load: the gallery rule is then read from the protocol
line (which named it for MARS, the one dataset whose released rule adds the query), and mINP shows as ``-``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sinet_timm.paths import replace_file

from .errors import OutputExistsError, ResultsFileError
from .results import METRIC_KEYS, VARIANTS, model_label

__all__ = ['COLUMNS', 'CompareRow', 'compare_rows', 'load_run', 'markdown_table', 'text_table', 'write_markdown']

COLUMNS = ('model', 'dataset', 'split', 'protocol') + tuple(
    {'mAP': 'mAP', 'mINP': 'mINP'}.get(k, f'R{k[4:]}') for k in METRIC_KEYS)


@dataclass
class CompareRow:
    """One row of the table: a run's plain protocol or one of its post-processed results."""

    model: str
    dataset: str
    split: str
    protocol: str
    metrics: dict[str, float | None]  # METRIC_KEYS -> percent (None: not recorded)
    source: str  # the results JSON

    def cells(self) -> list[str]:
        return [self.model, self.dataset, self.split, self.protocol] + [
            '-' if self.metrics.get(k) is None else f'{self.metrics[k]:.1f}' for k in METRIC_KEYS]


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load_run(path: str | Path) -> dict[str, Any]:
    """A ``sinet-eval`` results JSON, checked: an object with ``model``, ``dataset`` and ``metrics`` (mAP and
    rank-1 in percent); :class:`ResultsFileError` otherwise."""
    path = Path(path)
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsFileError(f'{path}: no such results JSON') from None
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsFileError(f'cannot read {path}: {e}') from None
    except json.JSONDecodeError as e:
        raise ResultsFileError(f'{path} is not JSON ({e}); --compare takes the results JSONs sinet-eval writes') \
            from None
    metrics = summary.get('metrics') if isinstance(summary, dict) else None
    if not (isinstance(metrics, dict) and all(_is_num(metrics.get(k)) for k in ('mAP', 'rank1'))
            and isinstance(summary.get('model'), str) and isinstance(summary.get('dataset'), str)):
        raise ResultsFileError(f'{path} is not a sinet-eval results JSON: it needs "model", "dataset" and '
                               '"metrics" with mAP and rank1')
    return summary


def _gallery(summary: dict[str, Any]) -> str:
    rule = summary.get('gallery_rule')
    if isinstance(rule, dict) and isinstance(rule.get('query_added'), bool):
        added = rule['query_added']
    else:  # written before the rule was recorded: the protocol line named it where the query was added
        added = 'gallery = query + gallery' in str(summary.get('protocol', ''))
    return 'query+gallery' if added else 'gallery only'


def _num(v: Any) -> str:
    return f'{v:g}' if _is_num(v) else '?'


def _params(variant: str, summary: dict[str, Any]) -> str:
    parts = []
    aqe, rerank = summary.get('aqe') or {}, summary.get('rerank') or {}
    if 'aqe' in variant:
        parts.append(f"+ AQE (k {_num(aqe.get('k'))}, alpha {_num(aqe.get('alpha'))})")
    if 'rerank' in variant:
        parts.append(f"+ rerank (k1 {_num(rerank.get('k1'))}, k2 {_num(rerank.get('k2'))}, lambda "
                     f"{_num(rerank.get('lambda_value'))})")
    return ' '.join(parts)


def _protocol(summary: dict[str, Any], variant: str | None) -> str:
    bits = [str(summary.get('mode', '?')), _gallery(summary)]
    n = summary.get('query_frames')
    if _is_num(n):
        bits.append(f"image-to-video ({int(n)} query frame{'s' if n != 1 else ''})")
    if summary.get('input') == 'frames':
        bits.append('image model')
    text = '; '.join(bits)
    return f'{text}; {_params(variant, summary)}' if variant else text


def _split(summary: dict[str, Any]) -> str:
    splits = summary.get('splits')
    if isinstance(splits, list) and len(splits) > 1:
        return f'{len(splits)} splits (mean)'
    if isinstance(splits, list) and splits:
        return str(splits[0])
    return '-'


def compare_rows(paths: list[str | Path]) -> list[CompareRow]:
    """The table's rows: for every results JSON, its plain protocol, then each post-processed result it holds."""
    if not paths:
        raise ResultsFileError('--compare needs at least one results JSON')
    rows = []
    for path in paths:
        summary = load_run(path)
        model = model_label(summary)
        for variant in (None, *VARIANTS):
            block = summary['metrics'] if variant is None else summary.get(f'metrics_{variant}')
            if not isinstance(block, dict):
                continue
            metrics = {k: float(block[k]) if _is_num(block.get(k)) else None for k in METRIC_KEYS}
            rows.append(CompareRow(model, summary['dataset'], _split(summary), _protocol(summary, variant), metrics,
                                   str(path)))
    return rows


def text_table(rows: list[CompareRow]) -> str:
    """The rows as an aligned plain-text table (text columns left-aligned, metrics right-aligned)."""
    table = [list(COLUMNS)] + [r.cells() for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    text_cols = 4
    out = []
    for line in table:
        cells = [c.ljust(w) if i < text_cols else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        out.append('  '.join(cells).rstrip())
    return '\n'.join(out)


def markdown_table(rows: list[CompareRow]) -> str:
    """The rows as a Markdown table (metrics in percent, right-aligned)."""
    def esc(cell: str) -> str:
        return cell.replace('|', '\\|')

    lines = ['| ' + ' | '.join(COLUMNS) + ' |',
             '|' + '|'.join(['---'] * 4 + ['---:'] * (len(COLUMNS) - 4)) + '|']
    lines += ['| ' + ' | '.join(esc(c) for c in r.cells()) + ' |' for r in rows]
    return '\n'.join(lines) + '\n'


def write_markdown(rows: list[CompareRow], path: str | Path, overwrite: bool = False) -> Path:
    """Write :func:`markdown_table` (with the source files listed under it) to ``path``; an existing file is kept
    unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f'{path} exists; pass --overwrite to replace it or choose another --compare-output')
    sources = list(dict.fromkeys(r.source for r in rows))
    text = markdown_table(rows) + '\nMetrics in percent (mAP, CMC rank-1/5/10/20, mINP). Runs: ' + ', '.join(
        f'`{s}`' for s in sources) + '.\n'
    return replace_file(path, lambda tmp: tmp.write_text(text))
