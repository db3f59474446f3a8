"""The input checks every family's forward starts with (TorchScript compiles them; torch.fx keeps each family's
input module, which calls them, as one leaf)."""
import torch

from .errors import ModelInputError

__all__ = ['check_frames']


def check_frames(x: torch.Tensor, in_chans: int) -> None:
    """Raise :class:`ModelInputError` unless ``x`` is float clips ``(B, T, C, H, W)`` or crops ``(B, C, H, W)``
    with ``in_chans`` channels."""
    if x.dim() != 4 and x.dim() != 5:
        raise ModelInputError(
            f'expected clips (B, T, {in_chans}, H, W) or crops (B, {in_chans}, H, W); got a {x.dim()}-D tensor of '
            f'shape {list(x.shape)}. Add a batch dimension with x[None] for a single clip or crop.')
    if x.shape[-3] != in_chans:
        raise ModelInputError(
            f'expected {in_chans} channels at dim -3 of (B, T, C, H, W) or (B, C, H, W), got shape {list(x.shape)}; '
            '(B, C, T, H, W) inputs need x.transpose(1, 2)')
    if not x.is_floating_point():
        raise ModelInputError(
            f'expected float frames normalised as timm.data.resolve_data_config says (ImageNet mean/std), got '
            f'{x.dtype}. Convert uint8 frames with x.float() / 255, then subtract the mean and divide by the std.')
