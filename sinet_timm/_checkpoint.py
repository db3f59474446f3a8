"""Checks every family's ``checkpoint_filter_fn`` applies before timm loads a state dict."""
from typing import Any

import torch
import torch.nn as nn

from .errors import CheckpointError

__all__ = ['refuse_integer_weights']


def refuse_integer_weights(state_dict: dict[str, Any], model: nn.Module) -> None:
    """Raise :class:`CheckpointError` if the file holds integer (or bool) tensors where the model has floating-point
    ones: ``load_state_dict`` would copy them silently and the weights would become whole numbers."""
    own = model.state_dict()
    ints = [k for k, v in state_dict.items() if k in own and own[k].is_floating_point()
            and isinstance(v, torch.Tensor) and not v.is_floating_point()]
    if ints:
        raise CheckpointError(
            f'the checkpoint holds {state_dict[ints[0]].dtype} values where the model has floating-point weights '
            f'({len(ints)} tensors, e.g. {ints[0]}): it is not a weights file of this model (or was converted '
            'wrongly); convert the original checkpoint again')
