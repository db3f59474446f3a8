from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

import sinet_timm  # noqa: F401  (registers the models)

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items):
    has_gpu = torch.cuda.is_available()
    for item in items:
        if 'gpu' in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason='needs a CUDA GPU'))


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python: this checkout first on PYTHONPATH, the caller's entries kept."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get('PYTHONPATH', '')) if p)
    return dict(os.environ, PYTHONPATH=path, **extra)


def interrupted_eval(root: Path, out: Path, shards: int = 1) -> tuple[list[str], subprocess.CompletedProcess]:
    """Runs the sinet-eval console script (its module's main) on the PRID-2011 layout at ``root``, dense clips one
    per shard (long enough to interrupt), and sends SIGINT to its whole process group, as a terminal's Ctrl-C
    does, once ``shards`` feature shards exist: inside the extraction. Returns the command (to rerun it) and the
    interrupted run's exit status and output; the cache is ``out / 'cache'``, the JSON ``out / 'r.json'``."""
    cache = out / 'cache'
    cmd = [sys.executable, '-c', 'import sys; from sinet_cli.eval import main; sys.exit(main())', '--model',
           'sinet_r50', '--no-pretrained', '--dataset', 'prid2011', '--root', str(root), '--workers', '1',
           '--no-progress', '--cache-dir', str(cache), '--batch-clips', '1', '--shard-clips', '1',
           '--output', str(out / 'r.json')]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
                         start_new_session=True)
    deadline = time.monotonic() + 120
    while len(list(cache.rglob('shard_*.safetensors'))) < shards and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGINT)
    stdout, stderr = p.communicate(timeout=120)
    return cmd, subprocess.CompletedProcess(cmd, p.returncode, stdout, stderr)


@contextlib.contextmanager
def killing_a_child(ready: Callable[[multiprocessing.Process], bool] = lambda child: True
                    ) -> Iterator[list[multiprocessing.Process]]:
    """While the block runs, a thread SIGKILLs (what the kernel's OOM killer sends) the first child process that
    started during the block and for which ``ready`` holds; the list it yields then holds that child."""
    before = {child.pid for child in multiprocessing.active_children()}
    stop, killed = threading.Event(), []

    def watch() -> None:
        while not stop.is_set():
            for child in multiprocessing.active_children():
                if child.pid not in before and ready(child):
                    os.kill(child.pid, signal.SIGKILL)
                    killed.append(child)
                    return
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield killed
    finally:
        stop.set()
        watcher.join()


def layout_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes], revision: str | None = None) -> Path:
    """Write ``files`` into a Hugging Face Hub cache folder the way ``hf_hub_download`` leaves it."""
    org, name = repo_id.split('/')
    repo = cache / f'models--{org}--{name}'
    revision = revision or hashlib.sha1(repo_id.encode()).hexdigest()
    snap = repo / 'snapshots' / revision
    snap.mkdir(parents=True, exist_ok=True)
    (repo / 'refs').mkdir(exist_ok=True)
    (repo / 'refs' / 'main').write_text(revision)
    for fname, data in files.items():
        (snap / fname).write_bytes(data)
    return snap


def run_offline(code: str, cache: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with the Hub offline and its cache at ``cache``."""
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(cache), HF_HOME=str(cache.parent / 'hf_home'))
    return subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=timeout)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def clip() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 4, 3, 256, 128, generator=g)


def read_json(p: Path) -> dict:
    return json.loads(Path(p).read_text())
