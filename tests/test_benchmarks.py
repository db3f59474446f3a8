"""The benchmark scripts run end to end and print the tables the speed issue asks for (smallest settings)."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import child_env

BENCH = Path(__file__).resolve().parents[1] / 'benchmarks'


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f'_bench_{name}', BENCH / f'{name}.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow  # 13-20 s in CI: out of the default run (under 5 minutes)
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


@pytest.mark.slow
def test_bench_model_lists_tfclip(capsys: pytest.CaptureFixture) -> None:
    bench = _load('bench_model')
    assert bench.main(['--batch', '1', '--rounds', '1', '--warmup', '0', '--models', 'vreid_r50', '--tfclip']) == 0
    out = capsys.readouterr().out
    row = re.search(r'^tfclip_vit_b16\s+1\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$', out, re.M)
    assert row and row.group(1) == '96.187'  # params (M): CLIP ViT-B/16 at 256x128, projection, cameras, TMD
    assert 150 < float(row.group(2)) < 250 and float(row.group(3)) > 0  # GFLOPs per 8-frame clip, ms per clip


@pytest.mark.slow
@pytest.mark.heavy  # 30-140 s in CI: out of .ci/run (under 30 minutes), run by hand with -m heavy
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
    per_worker = re.search(
        r'^decode per worker: (\d+) frames/s \(no workers: decoded in the main process, \d+ CPUs\)$', out, re.M)
    decode_rate = re.search(r'^decode \(workers\)\s+[\d.]+\s+(\d+)$', out, re.M).group(1)
    assert per_worker and per_worker.group(1) == decode_rate  # one process: its rate is the whole rate
    assert float(stages['model (on device)']) > 0 and float(stages['pipeline (all overlapped)']) > 0
    assert re.search(r'^bottleneck: (decode|model); MARS test set \(681,089 frames\) at this rate: [\d.]+ min', out,
                     re.M)


@pytest.mark.slow
def test_bench_rerank_measures_both_rerankings(tmp_path: Path) -> None:
    """Run as a script (each method in a spawned process, which must import it): the table and the comparison."""
    r = subprocess.run([sys.executable, str(BENCH / 'bench_rerank.py'), '--num-query', '12', '--num-gallery', '60',
                        '--dim', '16', '--chunk', '7', '--methods', 'blocks', 'torchreid'],
                       capture_output=True, text=True, env=child_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = re.findall(r'^rerank: (reid_eval blocks|torchreid re_ranking)\s+([\d.]+)\s+([\d.]+)\s+(-?[\d.]+)'
                      r'\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$', r.stdout, re.M)
    assert [row[0] for row in rows] == ['reid_eval blocks', 'torchreid re_ranking'], r.stdout
    assert rows[0][4:] == rows[1][4:]  # the same mAP, R1, mINP
    assert re.search(r'^blocks vs torchreid: max \|difference\| [\d.e+-]+; the same top-10', r.stdout, re.M)


def test_bench_video_prints_decode_beside_model(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    bench = _load('bench_video')
    assert bench.main(['--data', str(tmp_path), '--frames', '8', '--people', '2', '--size', '96x160',
                       '--person-size', '48x24', '--model', 'vreid_r50', '--input-size', '64x32', '--workers', '0',
                       '--rounds', '1', '--max-frames-per-track', '4']) == 0
    out = capsys.readouterr().out
    assert re.search(r'^video: 160x96 h264, 8 frames, 3 tracks, 17 boxes of 48x24', out, re.M)
    stages = {m.group(1).strip(): m.groups()[1:] for m in re.finditer(
        r'^(\w[\w +():]*?)\s+([\d.]+)\s+([\d.]+|-)\s+([\d.]+|-)$', out, re.M)}
    assert set(stages) == {'decode', 'decode + crop (every box)', 'preprocess crops (1 process)',
                           'model (on device)', 'pipeline: extract 10 crops'}
    assert stages['decode + crop (every box)'][1] != '-' and stages['decode + crop (every box)'][2] != '-'
    assert stages['model (on device)'][1] != '-'
    assert re.search(r'^decode \+ crop (keeps pace|does NOT keep pace) with the model: \d+ crops/s vs [\d.]+ model '
                     r'frames/s \([\d.]+x\)$', out, re.M)


@pytest.mark.slow
@pytest.mark.heavy  # 30-140 s in CI: out of .ci/run (under 30 minutes), run by hand with -m heavy
def test_gpu_check_script_runs_its_steps_on_the_cpu(tmp_path: Path) -> None:
    """benchmarks/gpu_check.sh (issue 22's one GPU script) at toy sizes on the CPU: each step runs and logs, the
    gpu tests are collected, bench_model times only the models asked for (plus the two the targets compare), and a
    wrong stage name or a missing GPU is one line with exit code 2. Its eval stage is bench_eval's (tested above)
    plus `python -m reid_eval`, run by hand with SMOKE=1 before each GPU session."""
    script = BENCH / 'gpu_check.sh'
    env = child_env(SMOKE='1', OUT=str(tmp_path / 'out'), DATA=str(tmp_path / 'data'),
                    SINET_RELEASED=str(tmp_path / 'no-release'))
    r = subprocess.run(['bash', str(script), 'tests', 'model'], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.rstrip().endswith(f'all passed; logs in {tmp_path / "out"}')
    logs = {p.name: p.read_text() for p in (tmp_path / 'out').iterdir()}
    assert set(logs) == {'env.log', 'gpu_tests.log', 'bench_model.log'}
    assert '6/' in logs['gpu_tests.log'] and 'tests collected' in logs['gpu_tests.log']
    rows = re.findall(r'^(\w+_r50) ', logs['bench_model.log'], re.M)
    assert rows == ['vreid_r50', 'sinet_r50'] and 'released fp32' not in logs['bench_model.log']
    assert all(re.search(r'^== \w+: exit 0 after \d+ s$', log, re.M) for log in logs.values())
    bad = subprocess.run(['bash', str(script), 'benchmark'], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "unknown stage 'benchmark': expected tests, model or eval (none: all three)"]
    if not torch.cuda.is_available():
        gpu = subprocess.run(['bash', str(script), 'tests'], env=dict(env, SMOKE='0'), capture_output=True, text=True,
                             timeout=120)
        assert gpu.returncode == 2 and gpu.stderr.strip().splitlines() == [
            'no CUDA GPU here: run it on the GPU machine, or SMOKE=1 to check the script on the CPU']


@pytest.mark.slow
def test_bench_onnx_prints_torch_ort_and_int8_side_by_side(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    bench = _load('bench_onnx')
    assert bench.main(['--models', 'vreid_r50', '--img-size', '64x32', '--num-ids', '4', '--rounds', '1',
                       '--calibration-clips', '4', '--data', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r'^machine: .* onnxruntime [\d.]+; 4-frame 64x32 clips; 1 interleaved rounds$', out, re.M)
    assert re.search(r'^vreid_r50: exported in \d+ s .* quantized in \d+ s; ([\d.]+) -> ([\d.]+) MB$', out, re.M)
    assert re.search(r'^model\s+torch fp32\+cl\s+ort fp32\s+ort int8\s+int8/fp32 ort$', out, re.M)
    speed = re.search(r'^vreid_r50\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x$', out, re.M)
    assert speed and all(float(v) > 0 for v in speed.groups())
    maps = re.search(r'^vreid_r50\s+([\d.]+) /\s*([\d.]+)\s+([\d.]+) /\s*([\d.]+)\s+([\d.]+) /\s*([\d.]+)\s+'
                     r'([+-][\d.]+)$', out, re.M)
    assert maps, out
    assert abs(float(maps.group(1)) - float(maps.group(3))) < 0.1  # torch and onnxruntime fp32 score the same
    assert abs(float(maps.group(7)) - (float(maps.group(5)) - float(maps.group(3)))) < 0.01
    assert (tmp_path / 'vreid_r50-64x32-f4.onnx').is_file() and (tmp_path / 'vreid_r50-64x32-f4.int8.onnx').is_file()
