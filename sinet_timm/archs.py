"""The architectures this package registers with timm: the one list every other part reads.

Zoo files are validated against it, ``sinet-convert --arch`` offers it, the commands list it in their help, and a
test checks that it equals what the model files register.
"""
from __future__ import annotations

__all__ = ['ARCHITECTURES', 'RELEASED_NAMES', 'canonical_arch']

ARCHITECTURES: tuple[str, ...] = ('sinet_r50', 'sbnet_r50', 'idnet_r50', 'vreid_r50', 'sanet_r50', 'tfclip_vit_b16')

# the model names of the authors' code (its ``--arch``), accepted wherever an architecture is named
RELEASED_NAMES: dict[str, str] = {'sinet': 'sinet_r50', 'sbnet': 'sbnet_r50', 'idnet': 'idnet_r50',
                                  'resnet50': 'vreid_r50', 'sanet': 'sanet_r50'}


def canonical_arch(name: str) -> str:
    """An architecture name or the released code's name for it -> ours (unknown names are returned as given)."""
    return RELEASED_NAMES.get(name, name)
