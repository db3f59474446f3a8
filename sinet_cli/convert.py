"""``sinet-convert``: convert an authors' released checkpoint into a Hub-ready timm folder.

    sinet-convert SRC.pth.tar OUT_DIR [--arch sinet_r50] [--dataset mars]

writes ``OUT_DIR/model.safetensors`` and ``OUT_DIR/config.json`` (timm's ``save_for_hf`` format, plus re-ID
fields). Load them with ``timm.create_model("local-dir:OUT_DIR", pretrained=True)``. The released file is read with
``torch.load(weights_only=True)``: nothing in it is executed.
"""
from __future__ import annotations

import argparse
import json
import sys

from ._common import run

# the architectures (sinet_timm.archs), repeated so that parsing needs no torch import (a test checks they match)
ARCHS = ('sinet_r50', 'sbnet_r50', 'idnet_r50', 'vreid_r50', 'sanet_r50', 'tfclip_vit_b16', 'sinet', 'sbnet', 'idnet',
         'resnet50', 'sanet')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='sinet-convert', description=__doc__.split('\n\n')[0].replace('``', ''),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('src', help="the authors' .pth.tar (SINet/SANet; TF-CLIP's best_model.pth.tar) or a state dict "
                               'of one of the architectures')
    p.add_argument('out_dir', help='folder to write model.safetensors and config.json to')
    p.add_argument('--arch', choices=ARCHS, help='architecture (default: inferred from the keys); the released '
                                                 "code's names (sinet, sbnet, idnet, resnet50, sanet) work "
                                                 'too')
    p.add_argument('--dataset', help='training dataset recorded in config.json (e.g. mars, lsvid)')
    p.add_argument('--sha256', help='refuse to convert unless the file has this sha256')
    p.add_argument('--overwrite', action='store_true', help='replace the files of an existing output folder')
    return p


def _convert(args: argparse.Namespace) -> int:
    from sinet_timm.convert import convert

    out = convert(args.src, args.out_dir, args.arch, args.dataset, args.sha256, args.overwrite)
    cfg = json.loads((out / 'config.json').read_text())
    reid = cfg.get('reid', {})
    cams = cfg.get('model_args', {}).get('num_cameras')
    print(f"wrote {out}/model.safetensors and config.json: {cfg['architecture']}, "
          f"{reid.get('num_train_identities', cfg['num_classes'])} training identities"
          f"{f', {cams} cameras' if cams else ''}; load with "
          f"timm.create_model('local-dir:{out}', pretrained=True)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(lambda: _convert(args), interrupted='the output folder may be incomplete; rerun with --overwrite')


if __name__ == '__main__':
    sys.exit(main())
