"""SINet-family video person re-identification models for timm.

``import sinet_timm`` registers the architectures of :data:`sinet_timm.archs.ARCHITECTURES` with timm, so that
``timm.create_model("sinet_r50.mars", pretrained=True)`` works like any timm model.

Layout: :mod:`~sinet_timm.framewise` (the shared frame-wise ResNet-50, head and timm API), one file per family
(:mod:`~sinet_timm.sinet`: SINet, SBNet, IDNet and the baseline; :mod:`~sinet_timm.sanet`: SANet;
:mod:`~sinet_timm.vkd`: the VKD teachers and students on five ImageNet backbones;
:mod:`~sinet_timm.tfclip`: TF-CLIP, a CLIP ViT-B/16 with camera embeddings, not frame-wise),
:mod:`~sinet_timm.archs` (the families, one list),
:mod:`~sinet_timm.convert` (the authors' checkpoints), :mod:`~sinet_timm._zoo` (the zoo, generated from
``hub_configs/*.yaml``), :mod:`~sinet_timm.drive` and :mod:`~sinet_timm.hub` (original files and Hub folders),
:mod:`~sinet_timm.errors` (the project's error hierarchy). Nothing here imports the evaluator
(``reid_eval``) or the trainer (``sinet_train``).
"""

from .archs import ARCHITECTURES
from .errors import (
    CheckpointError,
    HubError,
    ModelInputError,
    SinetTimmError,
    WeightsUnavailableError,
    ZooConfigError,
)
from .framewise import SINetOutput, VideoReIDNet, checkpoint_filter_fn
from .sanet import SANet, sanet_r50
from .sinet import SINet, idnet_r50, sbnet_r50, sinet_r50, vreid_r50
from .tfclip import TFCLIP, tfclip_vit_b16
from .vkd import VKDNet, vkd_d121, vkd_mbv2, vkd_r34, vkd_r50, vkd_r50bam, vkd_r101

__version__ = "0.1.0"
__all__ = [
    "ARCHITECTURES",
    "CheckpointError",
    "HubError",
    "ModelInputError",
    "SANet",
    "SINet",
    "SINetOutput",
    "SinetTimmError",
    "TFCLIP",
    "VKDNet",
    "VideoReIDNet",
    "WeightsUnavailableError",
    "ZooConfigError",
    "checkpoint_filter_fn",
    "idnet_r50",
    "sanet_r50",
    "sbnet_r50",
    "sinet_r50",
    "tfclip_vit_b16",
    "vkd_d121",
    "vkd_mbv2",
    "vkd_r34",
    "vkd_r50",
    "vkd_r50bam",
    "vkd_r101",
    "vreid_r50",
]
