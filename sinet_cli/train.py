"""``sinet-train`` / ``python -m sinet_train``: train a SINet-family model with the paper's recipe.

    sinet-train --model sinet_r50 --dataset mars --root DATA --output runs/sinet-mars
    sinet-train --output runs/sinet-mars --resume                  # continue from the last checkpoint
    torchrun --nproc_per_node 4 -m sinet_train --model sinet_r50 --dataset mars --root DATA --output runs/x
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from ._common import AMP_CHOICES, fail, run

# the recipe's defaults (sinet_train.trainer.TrainConfig), repeated so that parsing needs no torch import (a test
# checks that every default equals TrainConfig's)
DEFAULTS: dict[str, Any] = dict(
    model='sinet_r50', dataset='mars', split=0, train_chunk=None, img_size=(256, 128), frames_per_clip=4,
    num_identities=8, num_instances=4, epochs=160, lr=3e-4, weight_decay=5e-4, milestones=(40, 80, 120), gamma=0.1,
    margin=0.3, frame_loss_weight=0.001, temperature=0.07, flip_prob=0.5, erase_prob=0.5, amp='auto', clip_grad=None,
    seed=1, workers=min(4, os.cpu_count() or 1), device='auto', eval_every=10, eval_mode='sampled',
    eval_batch_clips=32, keep_checkpoints=1, stop_at_epoch=None, log_every=0)
PAPER_FRAME_LOSS_WEIGHT = 0.01  # lambda2 in the paper's text (the released code uses DEFAULTS' 0.001)
_D = argparse.Namespace(**DEFAULTS)


class _ParseKwargs(argparse.Action):
    """``KEY=VALUE`` pairs; values are Python literals when they parse as one (``layers=(1,1,1,1)``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        out = dict(getattr(namespace, self.dest) or {})
        for item in values:
            key, sep, value = item.partition('=')
            if not sep or not key:
                parser.error(f'{option_string} takes KEY=VALUE pairs, got {item!r}')
            try:
                out[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                out[key] = value
        setattr(namespace, self.dest, out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='sinet-train', description="train a SINet-family model with the paper's recipe (or resume a run)",
        formatter_class=argparse.RawTextHelpFormatter,
        epilog='Defaults are the released recipe (paper Sec. 4.2): 8 identities x 4 tracklets per batch, 4 frames '
               'by restricted random\nsampling, 256x128, flip + random erasing, Adam 3e-4 (wd 5e-4), lr x0.1 at '
               'epochs 40/80/120, 160 epochs,\nCE + triplet (cosine, margin 0.3) + 0.001 x frame InfoNCE (SBNet/SINet; '
               'SANet, IDNet and the baseline train\nwithout it, as released).')
    g = p.add_argument_group('run')
    g.add_argument('--config', type=Path, help='JSON/YAML file of settings (e.g. a run\'s config.json) used as '
                                                'defaults;\nflags given on the command line win')
    g.add_argument('--output', help='run folder (config, log, metrics, checkpoints, best/ and last/)')
    g.add_argument('--resume', action='store_true',
                   help='continue the run in --output from its last checkpoint (its settings are the defaults)')
    g.add_argument('--overwrite', action='store_true',
                   help='replace the run in --output (only files sinet-train writes are removed)')
    g.add_argument('--stop-at-epoch', type=int, default=_D.stop_at_epoch,
                   help='stop after this epoch as if interrupted (time-limited jobs); continue with --resume')
    g = p.add_argument_group('model and data')
    g.add_argument('--model', default=_D.model, help='sinet_r50, sbnet_r50, idnet_r50, vreid_r50 or sanet_r50')
    g.add_argument('--model-kwargs', nargs='+', action=_ParseKwargs, default={}, metavar='KEY=VALUE',
                   help='extra timm.create_model arguments, e.g. idm_reduction=4 drop_rate=0.1')
    g.add_argument('--no-pretrained', dest='pretrained', action='store_false',
                   help='random init instead of the ImageNet ResNet-50 backbone (timm/resnet50.tv_in1k); '
                        'for offline runs')
    g.add_argument('--dataset', default=_D.dataset,
                   help='mars, lsvid, ilidsvid, prid2011, dukev, or synthetic (a small generated MARS-format set)')
    g.add_argument('--root', help='folder holding the dataset folder (e.g. DATA for DATA/mars)')
    g.add_argument('--split', type=int, default=_D.split, help='split of iLIDS-VID / PRID-2011 (0..9)')
    g.add_argument('--train-chunk', type=int, default=_D.train_chunk,
                   help='cut training tracklets into pieces of this many frames (default: the released loaders\' '
                        'sampling_step: 48 for LS-VID, 32 for DukeV, whole tracklets otherwise; 0 = whole)')
    g.add_argument('--img-size', type=int, nargs=2, default=list(_D.img_size), metavar=('H', 'W'),
                   help='frame size the frames are resized to (256 128)')
    g.add_argument('--frames-per-clip', type=int, default=_D.frames_per_clip, help='released --seq_len (4)')
    g.add_argument('--num-identities', type=int, default=_D.num_identities, help='identities per batch (P)')
    g.add_argument('--num-instances', type=int, default=_D.num_instances, help='tracklets per identity (K)')
    g.add_argument('--flip-prob', type=float, default=_D.flip_prob,
                   help='probability of flipping a clip horizontally (all its frames together)')
    g.add_argument('--erase-prob', type=float, default=_D.erase_prob, help='random erasing probability')
    g.add_argument('--erase-same-box', action='store_true',
                   help='erase the same box in every frame of a clip (released: same decision and position,\n'
                        'box size drawn per frame)')
    g.add_argument('--workers', type=int, default=_D.workers,
                   help='data loading processes (default: 4 as released, or the number of CPUs if fewer)')
    g = p.add_argument_group('optimisation')
    g.add_argument('--epochs', type=int, default=_D.epochs, help='epochs in all (160)')
    g.add_argument('--lr', type=float, default=_D.lr, help='Adam learning rate (3e-4)')
    g.add_argument('--weight-decay', type=float, default=_D.weight_decay, help='Adam weight decay (5e-4)')
    g.add_argument('--milestones', type=int, nargs='+', default=list(_D.milestones),
                   help='epochs after which the lr is multiplied by --gamma (released --stepsize 40 80 120)')
    g.add_argument('--gamma', type=float, default=_D.gamma,
                   help='factor the lr is multiplied by at each milestone (0.1)')
    g.add_argument('--margin', type=float, default=_D.margin, help='triplet margin')
    g.add_argument('--frame-loss-weight', type=float, default=_D.frame_loss_weight,
                   help=f'lambda2 of the frame InfoNCE loss (SBNet/SINet only): {_D.frame_loss_weight} in the '
                        f'released code (default),\n{PAPER_FRAME_LOSS_WEIGHT} in the paper\'s text; 0 disables it')
    g.add_argument('--temperature', type=float, default=_D.temperature, help='InfoNCE temperature')
    g.add_argument('--amp', choices=AMP_CHOICES, default=_D.amp,
                   help='autocast on CUDA (auto: bf16 where supported, else fp16 with a GradScaler); off on CPU')
    g.add_argument('--clip-grad', type=float, default=_D.clip_grad, help='clip the gradient norm to this value')
    g.add_argument('--seed', type=int, default=_D.seed,
                   help='seed of the weights, batches and augmentations (a run is a function of it)')
    g.add_argument('--deterministic', action='store_true',
                   help='deterministic algorithms (cuDNN/cuBLAS; slower), for bit-identical reruns on a GPU')
    g.add_argument('--device', default=_D.device, help='auto, cpu, cuda or cuda:N (torchrun: the local rank\'s)')
    g = p.add_argument_group('evaluation (reid_eval)')
    g.add_argument('--eval-every', type=int, default=_D.eval_every,
                   help='evaluate every N epochs and after the last (0: only after the last); best by rank-1')
    g.add_argument('--eval-mode', choices=('sampled', 'dense'), default=_D.eval_mode,
                   help='protocol of the evaluations during training (released: sampled)')
    g.add_argument('--eval-at-start', action='store_true', help='also evaluate the untrained model (epoch 0)')
    g.add_argument('--eval-batch-clips', type=int, default=_D.eval_batch_clips,
                   help='clips per forward pass in the evaluations')
    g.add_argument('--no-final-eval', dest='final_eval', action='store_false',
                   help='skip the dense evaluation of the best and last models after training')
    g.add_argument('--keep-checkpoints', type=int, default=_D.keep_checkpoints,
                   help='how many epoch checkpoints (with optimizer state) to keep')
    g.add_argument('--log-every', type=int, default=_D.log_every, help='log the loss every N steps (0: per epoch)')
    g.add_argument('--no-progress', dest='progress', action='store_false', help='no progress bars')
    return p


def _read_settings(path: Path) -> dict[str, Any]:
    from sinet_train import TrainError

    try:
        text = path.read_text()
    except OSError as e:
        raise TrainError(f'cannot read --config {path}: {e}') from e
    if path.suffix in ('.yaml', '.yml'):
        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if isinstance(data, dict) and isinstance(data.get('config'), dict):
        data = data['config']  # a run's config.json
    if not isinstance(data, dict):
        raise TrainError(f'--config {path}: expected a mapping of settings')
    return data


_NOT_DEFAULTS = ('output', 'resume', 'overwrite', 'stop_at_epoch')


def parse_config(argv: list[str] | None = None) -> Any:
    """Command line -> :class:`~sinet_train.TrainConfig` (with ``--config`` or, for ``--resume``, the run's
    settings)."""
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    return _config(parser, first, argv)


def _config(parser: argparse.ArgumentParser, first: argparse.Namespace, argv: list[str] | None) -> Any:
    from sinet_train import TrainConfig, TrainError

    defaults: dict[str, Any] = {}
    if first.resume and first.output and not (Path(first.output) / 'config.json').is_file():
        what = 'does not exist' if not Path(first.output).exists() else 'holds no sinet-train run (no config.json)'
        raise TrainError(f'--resume: {first.output} {what}; give the --output folder of the run to continue, or start '
                         'a new run without --resume')
    if first.config:
        defaults.update(_read_settings(first.config))
    if first.resume and first.output and (Path(first.output) / 'config.json').is_file():
        defaults.update(_read_settings(Path(first.output) / 'config.json'))
    fields = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(defaults) - fields)
    if unknown:
        raise TrainError(f'unknown settings in the configuration file: {", ".join(unknown)}')
    parser.set_defaults(**{k: v for k, v in defaults.items() if k not in _NOT_DEFAULTS})
    args = parser.parse_args(argv)
    values = {k: v for k, v in vars(args).items() if k in fields}
    return TrainConfig(**values)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    first = parser.parse_args(argv)  # --help and mistyped flags are answered before torch is imported
    if not first.output:
        return fail('--output is required: the run folder')

    def train_run() -> int:
        from sinet_train import train

        train(_config(parser, first, argv))
        return 0

    return run(train_run, interrupted=f'the last finished epoch is checkpointed in {first.output}; continue with '
                                      f'sinet-train --output {first.output} --resume')


if __name__ == '__main__':
    sys.exit(main())
