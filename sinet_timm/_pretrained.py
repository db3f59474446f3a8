"""The pretrained cfg of a video re-ID model: timm's :class:`~timm.models.PretrainedCfg` plus the test protocol.

timm's cfg is a closed dataclass (``PretrainedCfg(**cfg)`` refuses unknown keys), so the fields every part of this
project reads from ``model.pretrained_cfg`` are declared here:

* ``protocol``: the test protocol the published numbers were measured with (``'dense'``, SINet's default;
  ``'vkd'``; ``'tfclip'``);
* ``camera_input``: the model takes the camera id of each clip (``model(x, camids)``);
* ``num_cameras``: how many cameras its camera embedding has (models with ``camera_input``).

A family whose cfgs carry these fields builds them with :func:`video_pretrained_cfg` and, in its entrypoint,
passes ``pretrained_cfg`` through :func:`as_video_pretrained_cfg` (a ``local-dir:`` / ``hf-hub:`` folder's
``config.json`` arrives as a plain dict holding them, which timm itself would refuse).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from timm.models import PretrainedCfg

__all__ = ['VideoPretrainedCfg', 'as_video_pretrained_cfg', 'video_pretrained_cfg']


@dataclass
class VideoPretrainedCfg(PretrainedCfg):
    """timm's pretrained cfg with the test protocol and the camera input of a video re-ID model."""

    protocol: str = 'dense'
    camera_input: bool = False
    num_cameras: int | None = None


_FIELDS = frozenset(f.name for f in dataclasses.fields(VideoPretrainedCfg))


def video_pretrained_cfg(**kwargs: Any) -> VideoPretrainedCfg:
    """A :class:`VideoPretrainedCfg` from keyword fields (for ``generate_default_cfgs``)."""
    return VideoPretrainedCfg(**kwargs)


def as_video_pretrained_cfg(cfg: Any) -> Any:
    """A dict cfg (e.g. read from a Hub folder's ``config.json``) as a :class:`VideoPretrainedCfg`, keeping only
    the fields it knows; a tag, ``None`` or a cfg object is returned as given."""
    if isinstance(cfg, dict):
        return VideoPretrainedCfg(**{k: v for k, v in cfg.items() if k in _FIELDS})
    return cfg
