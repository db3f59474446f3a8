"""The model families this package registers with timm: the one list every other part reads.

A family is one paper's (or one release's) models: its architectures, the names its authors' code gives them,
the paper and citation, the test protocol its numbers were measured with, and the model file that builds them and
converts its authors' checkpoints (``infer_arch`` + ``checkpoint_filter_fn`` there). Adding a family is a model
file, one :class:`Family` entry here and its zoo YAML files.

Zoo files are validated against :data:`ARCHITECTURES`, ``sinet-convert --arch`` offers it, the commands list it in
their help, the Hub cards read their family's paper and code, and a test checks that it equals what the model
files register. This module imports nothing heavy (no torch): read it anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ['ARCHITECTURES', 'FAMILIES', 'Family', 'RELEASED_NAMES', 'TRAINABLE', 'canonical_arch', 'family_of']


@dataclass(frozen=True)
class Family:
    """One family of models: what every part of the project needs to know about it."""

    name: str  # short id ('sinet', 'sanet', 'vkd')
    archs: tuple[str, ...]  # registered timm architectures
    released_names: dict[str, str]  # the authors' code's model names -> ours
    module: str  # the model file: builds the archs, has infer_arch(state_dict) and checkpoint_filter_fn
    paper: str  # title
    paper_ref: str  # who reported the zoo's metrics.paper numbers, e.g. 'Bai et al., CVPR 2022'
    code_url: str  # the authors' code and checkpoints
    license: str
    protocol: str  # the test protocol of the family's published numbers (reid_eval's protocol name)
    protocol_summary: str  # that protocol in one line (config.json, cards)
    citation: str = ''
    trainable: bool = True  # sinet-train trains it (the frame-wise ResNet-50 families with the SINet recipe)


_SINET_CITATION = """@inproceedings{bai2022SINet,
  title={Salient-to-Broad Transition for Video Person Re-identification},
  author={Bai, Shutao and Ma, Bingpeng and Chang, Hong and Huang, Rui and Chen, Xilin},
  booktitle={CVPR},
  year={2022}
}"""

_SANET_CITATION = """@article{bai2021sanet,
  title={SANet: Statistic Attention Network for Video-Based Person Re-Identification},
  author={Bai, Shutao and Ma, Bingpeng and Chang, Hong and Huang, Rui and Shan, Shiguang and Chen, Xilin},
  journal={IEEE Transactions on Circuits and Systems for Video Technology},
  year={2021},
  doi={10.1109/TCSVT.2021.3119983}
}"""

_VKD_CITATION = """@inproceedings{porrello2020robust,
  title={Robust Re-Identification by Multiple Views Knowledge Distillation},
  author={Porrello, Angelo and Bergamini, Luca and Calderara, Simone},
  booktitle={European Conference on Computer Vision},
  pages={93--110},
  year={2020},
  organization={Springer}
}"""

_TFCLIP_CITATION = """@inproceedings{yu2024tfclip,
  title={{TF-CLIP}: Learning Text-Free {CLIP} for Video-Based Person Re-identification},
  author={Yu, Chenyang and Liu, Xuehu and Wang, Yingquan and Zhang, Pingping and Lu, Huchuan},
  booktitle={Proceedings of the AAAI Conference on Artificial Intelligence},
  volume={38},
  number={7},
  pages={6764--6772},
  year={2024}
}"""

_DENSE = 'dense: every frame in 4-frame strided clips, clip embeddings averaged; cosine distance'

# infer_arch (sinet_timm.convert) asks the families from the last to the first: a family whose checkpoints look
# like an earlier family's plus modules of its own (SANet: SINet's baseline + SA) comes after it
FAMILIES: tuple[Family, ...] = (
    Family('sinet', ('sinet_r50', 'sbnet_r50', 'idnet_r50', 'vreid_r50'),
           {'sinet': 'sinet_r50', 'sbnet': 'sbnet_r50', 'idnet': 'idnet_r50', 'resnet50': 'vreid_r50'},
           'sinet_timm.sinet', 'Salient-to-Broad Transition for Video Person Re-identification',
           'Bai et al., CVPR 2022', 'https://github.com/baist/SINet', 'mit', 'dense', _DENSE, _SINET_CITATION),
    Family('sanet', ('sanet_r50',), {'sanet': 'sanet_r50'}, 'sinet_timm.sanet',
           'SANet: Statistic Attention Network for Video-Based Person Re-Identification',
           'Bai et al., IEEE TCSVT 2021', 'https://github.com/baist/SINet', 'mit', 'dense', _DENSE, _SANET_CITATION),
    Family('vkd', ('vkd_r34', 'vkd_r50', 'vkd_r101', 'vkd_r50bam', 'vkd_d121', 'vkd_mbv2'),
           {'resnet34': 'vkd_r34', 'resnet50': 'vkd_r50', 'resnet101': 'vkd_r101', 'resnet50bam': 'vkd_r50bam',
            'densenet121': 'vkd_d121', 'mobilenet': 'vkd_mbv2'},
           'sinet_timm.vkd', 'Robust Re-Identification by Multiple Views Knowledge Distillation',
           'Porrello et al., ECCV 2020', 'https://github.com/aimagelab/VKD', 'mit', 'vkd',
           'vkd: one 8-frame clip of the first frame of each of 8 chunks, pre-BN embedding averaged over the frames; '
           'cosine distance', _VKD_CITATION, trainable=False),
    Family('tfclip', ('tfclip_vit_b16',), {}, 'sinet_timm.tfclip',
           'TF-CLIP: Learning Text-Free CLIP for Video-Based Person Re-identification', 'Yu et al., AAAI 2024',
           'https://github.com/AsuradaYuci/TF-CLIP', 'mit', 'tfclip',
           'tfclip: every frame in consecutive 8-frame clips, the last padded by cycling its own frames, each clip '
           "with its tracklet's camera id, clip embeddings averaged; L2-normalised Euclidean distance",
           _TFCLIP_CITATION, trainable=False),
)

ARCHITECTURES: tuple[str, ...] = tuple(a for f in FAMILIES for a in f.archs)
TRAINABLE: tuple[str, ...] = tuple(a for f in FAMILIES if f.trainable for a in f.archs)  # what sinet-train takes

# the model names of the authors' code (their ``--arch`` / ``--backbone``), accepted wherever an architecture is
# named; where two families use one name (``resnet50``), the first family's wins here and canonical_arch(name,
# family) picks the other's
RELEASED_NAMES: dict[str, str] = {}
for _f in FAMILIES:
    for _k, _v in _f.released_names.items():
        RELEASED_NAMES.setdefault(_k, _v)


def family_of(arch: str) -> Family:
    """The family of an architecture (or of one of its authors' names); KeyError if none has it."""
    for f in FAMILIES:
        if arch in f.archs or arch in f.released_names:
            return f
    raise KeyError(arch)


def canonical_arch(name: str, family: str | None = None) -> str:
    """An architecture name or the released code's name for it -> ours (unknown names are returned as given);
    ``family`` (a :class:`Family` name) resolves a released name that several families use."""
    for f in FAMILIES:
        if f.name == family and name in f.released_names:
            return f.released_names[name]
    return RELEASED_NAMES.get(name, name)
