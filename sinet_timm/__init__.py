"""SINet video person re-identification models for timm.

``import sinet_timm`` registers ``sinet_r50``, ``sbnet_r50``, ``idnet_r50`` and ``vreid_r50`` with timm, so that
``timm.create_model("sinet_r50.mars", pretrained=True)`` works like any timm model.
"""

from .sinet import (
    SINet,
    SINetOutput,
    WeightsUnavailableError,
    checkpoint_filter_fn,
    idnet_r50,
    sbnet_r50,
    sinet_r50,
    vreid_r50,
)

__version__ = "0.1.0"
__all__ = [
    "SINet",
    "SINetOutput",
    "WeightsUnavailableError",
    "checkpoint_filter_fn",
    "idnet_r50",
    "sbnet_r50",
    "sinet_r50",
    "vreid_r50",
]
