"""``ssvif-train [CONFIG.yaml] --data DIR --out RUN [--resume | --overwrite] [--set k=v ...]``."""
from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ssvif-train."""
    p = argparse.ArgumentParser(
        prog='ssvif-train',
        description='Train a fusion model with SSVIF (label-free, or semantic with pixel labels '
        'or boxes).')
    p.add_argument('config', nargs='?', default=None,
                   help='YAML config (see config/train/); omitted = built-in defaults')
    p.add_argument('--data', default=None,
                   help='dataset folder in MSRS (vi/, ir/) or FMB (Visible/, Infrared/) layout')
    p.add_argument('--vi', default=None, help='visible image folder (with --ir)')
    p.add_argument('--ir', default=None, help='thermal image folder (with --vi)')
    p.add_argument('--boxes', default=None,
                   help='folder of YOLO box files (default: boxes/ beside the image folders)')
    p.add_argument('--extra', action='append', default=[], metavar='DIR',
                   help='another dataset folder for the training split (repeatable), e.g. '
                   'unlabelled pairs beside labelled ones')
    p.add_argument('--write-masks', default=None, metavar='DIR',
                   help='write the pixel labels training would use (ids + colour overlay) '
                   'to DIR and exit without training')
    p.add_argument('--out', required=True, help='run folder: checkpoints, logs, TensorBoard')
    p.add_argument('--resume', action='store_true',
                   help='continue the run in --out from its last.pt exactly')
    p.add_argument('--overwrite', action='store_true',
                   help='replace the run already in --out (its checkpoints, logs and tb/)')
    p.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE',
                   help='override a config value, e.g. --set train.epochs=20 (repeatable)')
    p.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    return p


def main(argv=None) -> int:
    """Entry point; returns the process exit code (2 for configuration/data errors)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(asctime)s %(name)s %(levelname)s: %(message)s')
    from ssvif_train.config import ConfigError, load_config
    from ssvif_train.discovery import DatasetError
    from ssvif_train.trainer import Trainer, TrainingError
    # Paths from flags are (key, value) pairs taken literally: never parsed as YAML, so
    # 'rec #2', '2024' or 'a: b' stay folder names.
    overrides = list(args.overrides)
    for key, value in (('data.root', args.data), ('data.vi', args.vi), ('data.ir', args.ir),
                       ('data.boxes', args.boxes)):
        if value:
            overrides.append((key, value))
    if args.extra:
        overrides.append(('data.extra', list(args.extra)))
    if args.resume and args.config:
        # The run's configuration is in its last.pt; a file given again would be ignored.
        print(f'ssvif-train: error: --resume continues with the configuration saved in '
              f'{args.out}/last.pt and does not read {args.config}; give changes with --set',
              file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, overrides)
        if args.write_masks:
            from ssvif_train.data import build_datasets, write_label_previews
            train, val, _ = build_datasets(cfg)
            n = write_label_previews([train, val], args.write_masks)
            print(f'ssvif-train: wrote {n} pixel labels to {args.write_masks}')
            return 0
        trainer = Trainer(cfg, args.out, resume=args.resume, overrides=tuple(overrides),
                          overwrite=args.overwrite)
        summary = trainer.run()
    except (ConfigError, DatasetError, TrainingError) as exc:
        print(f'ssvif-train: error: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('ssvif-train: interrupted; resume with --resume (last.pt holds the last '
              'completed epoch)', file=sys.stderr)
        return 130
    best = summary['best_val']
    what = 'L_fusion' if summary['monitor'] == 'fusion' else summary['monitor']
    print(f'ssvif-train: done after epoch {summary["epoch"]} (stage {summary["stage"]}), '
          f'best validation {what} {abs(best):.4f}; checkpoints in {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
