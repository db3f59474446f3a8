"""``sinet-convert``: convert an authors' released checkpoint into a Hub-ready timm folder.

    sinet-convert SRC.pth.tar OUT_DIR [--arch sinet_r50] [--dataset mars]
    sinet-convert distilled.zip::distilled_public/mars/selfdistill/distill_mars_resnet50/chk/chk_di_1 OUT_DIR
    sinet-convert baseline.zip OUT_DIR          # every checkpoint of the archive, OUT_DIR/<run>/<checkpoint>/
    sinet-convert best_model.pth.tar OUT_DIR --dataset mars   # TF-CLIP: an embedding model with the file's cameras

writes ``OUT_DIR/model.safetensors`` and ``OUT_DIR/config.json`` (timm's ``save_for_hf`` format, plus re-ID
fields). Load them with ``timm.create_model("local-dir:OUT_DIR", pretrained=True)``. The released file is read with
``torch.load(weights_only=True)``: nothing in it is executed. A zip is read member by member, never unpacked.
Weights holding NaN or Inf (a run that diverged, a damaged file) are refused unless --allow-nonfinite.
"""
from __future__ import annotations

import argparse
import json
import sys

from ._common import fail, run

# the families' architectures and their authors' names (sinet_timm.archs), repeated so that parsing needs no torch
# import (a test checks they match)
ARCHS = ('sinet_r50', 'sbnet_r50', 'idnet_r50', 'vreid_r50', 'sanet_r50',
         'vkd_r34', 'vkd_r50', 'vkd_r101', 'vkd_r50bam', 'vkd_d121', 'vkd_mbv2', 'tfclip_vit_b16',
         'sinet', 'sbnet', 'idnet', 'resnet50', 'sanet', 'resnet34', 'resnet101', 'resnet50bam', 'densenet121',
         'mobilenet')
MEMBER_SEP = '::'  # sinet_timm.convert.MEMBER_SEP


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='sinet-convert', description=__doc__.split('\n\n')[0].replace('``', ''),
                                epilog=__doc__.split('\n\n', 1)[1].replace('``', ''),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('src', help="the authors' checkpoint (SINet/SANet .pth.tar, VKD RUN/chk/chk_end, TF-CLIP "
                               f'best_model.pth.tar), ARCHIVE.zip{MEMBER_SEP}MEMBER for one checkpoint inside a '
                               'zip, or ARCHIVE.zip for all of its checkpoints')
    p.add_argument('out_dir', help='folder to write model.safetensors and config.json to')
    p.add_argument('--arch', choices=ARCHS, metavar='ARCH',
                   help='architecture (default: what the run files beside the checkpoint say, else inferred from '
                        f'the keys): {", ".join(ARCHS)}; the authors\' names (sinet, sbnet, idnet, resnet50, sanet; '
                        "VKD's --backbone names) work too: resnet50 is SINet's baseline unless the weights are "
                        "VKD's")
    p.add_argument('--dataset', help='training dataset recorded in config.json (e.g. mars, lsvid, dukev; default: '
                                     "what the authors' run files say, if any)")
    p.add_argument('--sha256', help='refuse to convert unless the file (the archive, for a zip) has this sha256')
    p.add_argument('--overwrite', action='store_true', help='replace the files of an existing output folder')
    p.add_argument('--allow-nonfinite', action='store_true',
                   help='convert weights holding NaN or Inf (refused by default: their embeddings would not be '
                        'finite); a warning says so')
    return p


def _is_whole_zip(src: str) -> bool:
    return MEMBER_SEP not in src and src.lower().endswith('.zip')


def _convert(args: argparse.Namespace) -> int:
    from sinet_timm.convert import convert, convert_all, zip_checkpoints

    if _is_whole_zip(args.src) and len(zip_checkpoints(args.src)) != 1:
        if args.arch or args.dataset:
            return fail("--arch and --dataset describe one checkpoint; with a whole archive each checkpoint's run "
                        f'files (or keys) tell them. Name one member as {args.src}{MEMBER_SEP}MEMBER instead')
        outs = convert_all(args.src, args.out_dir, args.sha256, args.overwrite, log=print,
                           allow_nonfinite=args.allow_nonfinite)
        print(f"wrote {len(outs)} folders under {args.out_dir}; load one with "
              f"timm.create_model('local-dir:FOLDER', pretrained=True)")
        return 0
    out = convert(args.src, args.out_dir, args.arch, args.dataset, args.sha256, args.overwrite,
                  allow_nonfinite=args.allow_nonfinite)
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
