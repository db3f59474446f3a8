"""The benchmark scripts run end to end and print the tables the speed issue asks for (smallest settings)."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / 'benchmarks'


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f'_bench_{name}', BENCH / f'{name}.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_model_prints_ratios_flops_and_params(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    bench = _load('bench_model')
    assert bench.main(['--batch', '1', '--rounds', '1', '--warmup', '0', '--released', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert 'is not a checkout of baist/SINet' in out  # a wrong --released path is said, the column skipped
    assert re.search(r'^machine: .*threads, device cpu', out, re.M)
    rows = {m.group(1): m for m in re.finditer(
        r'^(\w+_r50)\s+([\d.]+)\s+([\d.]+)\s+(\S+)\s+([\d.]+) \(([\d.]+)x\)\s+([\d.]+) \(([\d.]+)x\)$', out, re.M)}
    assert set(rows) == {'vreid_r50', 'idnet_r50', 'sbnet_r50', 'sinet_r50', 'sanet_r50'}
    assert rows['sinet_r50'].group(2) == '26.263' and rows['vreid_r50'].group(2) == '23.539'  # params (M)
    assert rows['sanet_r50'].group(2) == '23.804' and rows['sanet_r50'].group(4) == '-'
    assert rows['sinet_r50'].group(4) == '32.62' and rows['vreid_r50'].group(4) == '32.24'  # paper GFLOPs
    assert abs(float(rows['sinet_r50'].group(3)) - 32.64) < 0.01  # counted GFLOPs per clip
    assert rows['vreid_r50'].group(6) == '1.000' and float(rows['sinet_r50'].group(6)) > 0
    assert re.search(r'^batch +1 fp32\+cl +sinet +[\d.]+ clips/s; sinet/vreid time [\d.]+ \(<= 1.05\)$', out, re.M)
    assert 'released fp32 / ours' not in out


def test_bench_eval_times_every_stage(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    bench = _load('bench_eval')
    assert bench.main(['--num-ids', '4', '--workers', '0', '--gen-workers', '0', '--data', str(tmp_path),
                       '--rank-torchreid']) == 0
    out = capsys.readouterr().out
    frames = int(re.search(r'^dataset: \d+ tracklets, (\d+) frames in \d+ clips', out, re.M).group(1))
    assert frames > 100 and frames % 4 == 0  # dense 4-frame clips
    stages = dict(re.findall(r'^([a-z][a-z +()]*?)\s+([\d.]+)\s+(?:\d+|-)$', out, re.M))
    assert set(stages) == {'decode (workers)', 'transfer + normalise', 'model (on device)',
                           'pipeline (all overlapped)', 'ranking', 'ranking (torchreid)'}
    assert re.search(r'^ranking: \d+ queries x \d+ gallery tracklets; torchreid / numpy time: [\d.]+x$', out, re.M)
    assert 'rankers disagree' not in out
    assert float(stages['model (on device)']) > 0 and float(stages['pipeline (all overlapped)']) > 0
    assert re.search(r'^bottleneck: (decode|model); MARS test set \(681,089 frames\) at this rate: [\d.]+ min', out,
                     re.M)
