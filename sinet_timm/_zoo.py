"""The model zoo: one declarative YAML file per published checkpoint in ``hub_configs/``.

``sinet_timm``'s pretrained cfgs are generated from these files, so adding a checkpoint means adding one file.
The files are installed inside the package as ``sinet_timm.hub_configs`` (see ``pyproject.toml``); in a source
checkout they are read from the top-level ``hub_configs/`` folder.
"""
from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

REQUIRED_KEYS = ('name', 'architecture', 'hf_hub_id', 'dataset', 'num_classes', 'input', 'source', 'license')


class ZooConfigError(ValueError):
    """A hub_configs file is malformed."""


def zoo_dir() -> Path:
    """The folder holding the zoo's YAML files."""
    try:
        p = Path(str(resources.files('sinet_timm.hub_configs')))
        if p.is_dir() and any(p.glob('*.yaml')):
            return p
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / 'hub_configs'


def load_entry(path: str | Path) -> dict[str, Any]:
    """Read and validate one zoo file."""
    path = Path(path)
    try:
        entry = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ZooConfigError(f'{path}: not valid YAML ({e})') from e
    if not isinstance(entry, dict):
        raise ZooConfigError(f'{path}: expected a mapping at the top level')
    missing = [k for k in REQUIRED_KEYS if k not in entry]
    if missing:
        raise ZooConfigError(f'{path}: missing keys {missing}; every entry needs {list(REQUIRED_KEYS)}')
    if path.stem != entry['name']:
        raise ZooConfigError(f"{path}: file name must be '<name>.yaml' (name is {entry['name']!r})")
    arch, _, tag = entry['name'].partition('.')
    if arch != entry['architecture'] or not tag:
        raise ZooConfigError(f"{path}: name must be '<architecture>.<tag>', got {entry['name']!r}")
    return entry


@functools.cache
def zoo_entries() -> dict[str, dict[str, Any]]:
    """All zoo entries keyed by ``arch.tag`` name, in file-name order."""
    d = zoo_dir()
    return {e['name']: e for e in (load_entry(p) for p in sorted(d.glob('*.yaml')))}


def zoo_pretrained_cfgs() -> dict[str, dict[str, Any]]:
    """timm pretrained-cfg fields for each zoo entry."""
    out = {}
    for name, e in zoo_entries().items():
        h, w = e['input']['img_size']
        out[name] = dict(
            hf_hub_id=e['hf_hub_id'],
            num_classes=int(e['num_classes']),
            input_size=(3, int(h), int(w)),
            license=e['license'],
            description=f"{e['architecture']} trained on {e['dataset']} (authors' released checkpoint)",
        )
    return out
