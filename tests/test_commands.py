"""What the commands say: help for every option, and every hint they print, followed as printed."""
from __future__ import annotations

import argparse
import builtins
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import timm
import torch
from conftest import child_env, interrupted_eval
from released_reference import save_released_checkpoint

import reid_eval
from reid_eval.results import model_label
from reid_eval.synthetic import make_synthetic
from sinet_cli import convert, eval, export, extract, hub, search, synthetic, train, viz
from sinet_timm.convert import sha256_of

COMMANDS = (convert, eval, export, extract, hub, search, synthetic, train, viz)


@pytest.fixture(scope='module')
def prid(tmp_path_factory) -> Path:
    return make_synthetic('prid2011', tmp_path_factory.mktemp('commands') / 'data', num_ids=12, lengths=(1, 2, 3))


def _options(parser: argparse.ArgumentParser, prog: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f'{prog} {name}')
        elif not isinstance(action, argparse._HelpAction):
            yield prog, action


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


@pytest.mark.parametrize('command', COMMANDS, ids=lambda m: m.__name__.rsplit('.', 1)[1])
def test_every_option_has_help_in_plain_words(command):
    parser = command.build_parser()
    missing = [f'{prog} {"/".join(a.option_strings) or a.dest}' for prog, a in _options(parser, parser.prog)
               if not (a.help or '').strip()]
    assert missing == []
    for p in _parsers(parser):
        text = p.format_help()
        assert '``' not in text and ':func:' not in text and ':class:' not in text, p.prog


def test_convert_hint_loads_the_converted_weights(tmp_path, capsys):
    """sinet-convert ends with the line that loads its output; run as printed, it gives the released weights."""
    src = tmp_path / 'checkpoint_ep150.pth.tar'
    sd = save_released_checkpoint(src, 'resnet50', seed=4)
    assert convert.main([str(src), str(tmp_path / 'out'), '--arch', 'vreid_r50', '--dataset', 'prid2011']) == 0
    hint = re.search(r"(timm\.create_model\(.*\))", capsys.readouterr().out).group(1)
    assert 'pretrained=True' in hint
    model = builtins.eval(hint, {'timm': timm})
    torch.testing.assert_close(model.classifier.weight, sd['classifier.weight'])
    torch.testing.assert_close(model.conv1.weight, sd['conv1.weight'][:, :, 0])  # released: a 1x7x7 3-D conv


def test_hub_convert_hint_loads_the_converted_weights(tmp_path, capsys):
    """sinet-hub convert ends with 'try it: ...' and says how to record the sha256: both work as printed."""
    src = tmp_path / 'sinet_mars.pth.tar'
    sd = save_released_checkpoint(src, 'sinet', seed=5)
    entry = tmp_path / 'sinet_r50.mars.yaml'
    entry.write_text((Path(__file__).resolve().parents[1] / 'hub_configs' / entry.name).read_text())
    assert hub.main(['convert', str(entry), '--src', str(src), '--out', str(tmp_path / 'out')]) == 0
    out = capsys.readouterr().out
    model = builtins.eval(out.split('try it: ', 1)[1].strip(), {'timm': timm})
    torch.testing.assert_close(model.classifier.weight, sd['classifier.weight'])
    assert '(or rerun with --record-sha256)' in out
    assert hub.main(['convert', str(entry), '--src', str(src), '--out', str(tmp_path / 'out2'), '--record-sha256']) == 0
    assert f'sha256: {sha256_of(src)}' in entry.read_text()
    assert 'the zoo entry has none yet' not in capsys.readouterr().out


def test_synthetic_hint_runs(tmp_path, capsys, monkeypatch):
    """sinet-synthetic prints the sinet-eval line that evaluates its dataset: it runs as printed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('SINET_TIMM_CACHE', str(tmp_path / 'cache'))
    assert synthetic.main(['prid2011', str(tmp_path / 'data'), '--num-ids', '4']) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    prog, *argv = shlex.split(line.split('evaluate on it with: ', 1)[1])
    assert prog == 'sinet-eval'
    assert eval.main(argv + ['--no-progress']) == 0
    out = capsys.readouterr().out
    assert 'vreid_r50 (random weights) on prid2011' in out
    written = list((tmp_path / 'runs' / 'eval').glob('*.json'))
    assert len(written) == 1 and '-random-weights-' in written[0].name
    summary = json.loads(written[0].read_text())
    assert summary['random_weights'] is True and summary['paper'] == {}
    assert (tmp_path / 'runs' / 'eval' / summary['cmc_plot']).is_file()
    assert model_label(summary) == 'vreid_r50 (random weights)'  # the CMC plot's and sinet-viz ranks' titles


def test_video_hint_runs(tmp_path, capsys, monkeypatch):
    """sinet-synthetic videos prints the sinet-extract line for its videos; its default weights come from the
    network, so it runs here as printed plus --no-pretrained."""
    monkeypatch.chdir(tmp_path)
    assert synthetic.main(['videos', str(tmp_path / 'v'), '--frames', '8', '--num-ids', '2']) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    prog, *argv = shlex.split(line.split('embed the tracks with: ', 1)[1])
    assert prog == 'sinet-extract'
    assert extract.main(argv + ['--no-pretrained', '--no-progress', '--workers', '0']) == 0
    assert (tmp_path / 'cam1.safetensors').is_file()


@pytest.mark.slow
def test_ctrl_c_then_the_advised_rerun_resumes(prid, tmp_path):
    """Ctrl-C during sinet-eval says a rerun of the same command resumes from the finished shards; it does."""
    cache = tmp_path / 'cache'
    cmd, r = interrupted_eval(prid, tmp_path, shards=2)
    assert r.returncode == 130 and 'a rerun of the same command resumes' in r.stderr, r.stderr[-2000:]
    done = len(list(cache.rglob('shard_*.safetensors')))
    assert done >= 2
    r = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    split = json.loads((tmp_path / 'r.json').read_text())['per_split'][0]
    assert split['cache']['reused_shards'] >= 2


@pytest.mark.slow  # 13-20 s in CI: out of the default run (under 5 minutes)
def test_progress_says_which_split_and_what_came_from_the_cache(prid, tmp_path, capsys):
    """--split all: each progress bar names its split ('split 3 (4/10)') and how many shards were cached; a rerun
    that computes nothing says where its features came from."""
    kw = dict(pretrained=False, seed=0, mode='sampled', workers=0, device='cpu', split='all', progress=True,
              cache_dir=tmp_path / 'cache', shard_clips=4, data_config={'input_size': (3, 128, 64)})
    reid_eval.evaluate('vreid_r50', 'prid2011', prid, **kw)
    err = capsys.readouterr().err
    for k in range(10):
        assert f'prid2011 split {k} ({k + 1}/10): sampled features (0 of 3 shards cached)' in err
    reid_eval.evaluate('vreid_r50', 'prid2011', prid, **kw)
    err = capsys.readouterr().err
    assert 'prid2011 split 9 (10/10): sampled features: all 3 shards from the cache (' in err
    assert 'shards cached)' not in err
