"""sinet_train: the SINet training recipe (paper Sec. 4.2 and the released code), on one GPU or many."""
from .data import ClipTrainTransform, IdentityBatchSampler, TrainClipDataset, restricted_random_crop
from .losses import SINetCriterion, batch_hard_triplet_loss, frame_infonce_loss
from .trainer import TrainConfig, TrainError, train

__all__ = [
    'ClipTrainTransform', 'IdentityBatchSampler', 'SINetCriterion', 'TrainClipDataset', 'TrainConfig', 'TrainError',
    'batch_hard_triplet_loss', 'frame_infonce_loss', 'restricted_random_crop', 'train',
]
