#!/usr/bin/env python3
r"""Downstream segmentation: do segmentation-oriented fused images segment better (SSVIF A-B).

The SSVIF paper trains one segmentation network on each method's fused images and compares
the scores. This bench does the same with the labels at hand: the same small segmentation
network (:class:`DownstreamSegNet`, a strided CNN of 0.12 M parameters that reads one
3-channel image), the same recipe and the same seed, trained on the msrs/train images of each
source and scored on msrs/val:

* ``visible``: the visible image only; ``thermal``: the thermal image only (repeated to three
  channels); ``maxluma``: the max-luma rule (:func:`ssvif_ros.imaging.max_luma_fusion`);
* ``plain``: a SeAFusion-style network trained with the plain fusion loss (SSVIF's L_fusion,
  no segmentation branches: ``seafusion_ssvif.yaml`` with ``train.csc=false``);
* ``ssvif``: the same backbone trained with SSVIF (``seafusion_ssvif.yaml``);
* ``segfanet``: SegFANet trained with box supervision (``segfanet_supervised.yaml``).

Supervision is the boxes of msrs/train turned into weak pixel labels exactly as the trainer does
(:class:`ssvif_train.data.PairDataset`, :func:`ssvif_ros.labels.boxes_to_mask`: box cores and
warm pixels are the object, the rest of a box is ignored); the labels are the same for every
source. Scores are box-F1 and per-class F1 against the msrs/val boxes
(:class:`ssvif_ros.labels.BoxScorer`, as ``ssvif-eval boxes``), on full-resolution images.

Recipe: AdamW (lr ``--lr``, weight decay 1e-4, cosine decay to 0), ``--epochs`` passes over the
training pairs in batches of ``--batch`` random ``--crop`` crops with flips; ``--object-crop``
of the crops are placed on a random box (MSRS objects are small and sit near the horizon). Loss
CE + Dice over the labelled pixels (:func:`ssvif_train.losses.segmentation_terms`). For a given
seed the initial weights, the order of the pairs and every crop are the same for every source,
so the rows differ only by their images.

Fusion models come from checkpoints (``--ckpt plain=RUN/best.pt``, training or model
checkpoints) or, with ``--train-fusion-epochs N``, are trained here first on the same training
pairs (a short budget; ``--fusion-set KEY=VALUE`` passes overrides to those trainings). Without
``--sources`` the rows are the three rules plus every fusion source that has a checkpoint (all
three with ``--train-fusion-epochs``).

    .venv/bin/python bench/seg_downstream.py --ckpt plain=runs/plain/best.pt \\
        --ckpt ssvif=runs/ssvif/best.pt --ckpt segfanet=runs/segfanet/best.pt --seeds 0 1 2

Prints one Markdown table with the command line that made it (``--out FILE`` also writes it,
``--json FILE`` the numbers). With several seeds each cell is mean +- standard deviation over
the seeds, and differences smaller than that spread are not claimed. Progress bars appear on a
terminal only. Exit status 2 with a one-line reason for bad input.
"""
import argparse
import json
import math
import os
from pathlib import Path
import shlex
import sys

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ssvif_ros.progress import bar as progress_bar, on_terminal  # noqa: E402

RULES = ('visible', 'thermal', 'maxluma')
FUSION = {  # source -> (config, overrides) for --train-fusion-epochs
    'plain': ('seafusion_ssvif.yaml', ['train.csc=false']),
    'ssvif': ('seafusion_ssvif.yaml', []),
    'segfanet': ('segfanet_supervised.yaml', []),
}
SOURCES = RULES + tuple(FUSION)
TITLES = {'visible': 'visible only', 'thermal': 'thermal only', 'maxluma': 'max-luma rule',
          'plain': 'SeAFusion-style, plain fusion loss', 'ssvif': 'SeAFusion-style, SSVIF',
          'segfanet': 'SegFANet, box-supervised'}
CLASSES = ('person', 'car', 'bike')
NUM_CLASSES = 4  # MSRS ids 0 background, 1 car, 2 person, 3 bike
STRIDE = 8


class BenchError(ValueError):
    """Bad input; the message names the thing at fault."""


def _cbr(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DownstreamSegNet(nn.Module):
    """The downstream segmenter: one 3-channel image -> class logits (0.12 M parameters).

    Three stride-2 levels (16, 32, 64 channels; the 1/8 level with dilations 2 and 4 and a
    global-average context term), one 1/4 decoder step; logits N x n x H/4 x W/4 for H, W
    multiples of 8.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, widths=(16, 32, 64)):
        super().__init__()
        c1, c2, c3 = widths
        self.enc1 = nn.Sequential(_cbr(3, c1, 2), _cbr(c1, c1))                       # 1/2
        self.enc2 = nn.Sequential(_cbr(c1, c2, 2), _cbr(c2, c2))                      # 1/4
        self.enc3 = nn.Sequential(_cbr(c2, c3, 2), _cbr(c3, c3, 1, 2), _cbr(c3, c3, 1, 4))
        self.context = nn.Conv2d(c3, c3, 1)
        self.lat = nn.Conv2d(c3, c2, 1)
        self.dec = _cbr(c2, c2)
        self.cls = nn.Conv2d(c2, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W in [0, 1] -> N x n x H/4 x W/4 logits."""
        e2 = self.enc2(self.enc1((x - 0.5) / 0.25))                                   # 1/4
        e3 = self.enc3(e2)                                                            # 1/8
        e3 = F.relu(e3 + self.context(e3.mean(dim=(2, 3), keepdim=True)))
        up = F.interpolate(self.lat(e3), scale_factor=2.0, mode='bilinear', align_corners=False)
        return self.cls(self.dec(e2 + up))


# ---------------------------------------------------------------------------------- data
def load_split(data: Path, split: str, max_pairs: int):
    """Pairs of ``data/split`` with boxes: list of dicts (stem, vis, ir floats, label, boxes)."""
    from ssvif_ros import imaging
    from ssvif_train.data import DatasetError, discover_pairs, LabelSpec, PairDataset
    folder = data / split
    if not (folder / 'boxes').is_dir():
        raise BenchError(f'{folder}/boxes not found: the bench needs box files for {split}')
    try:
        rep = discover_pairs(str(data), 'auto', split, max_pairs=max_pairs)
        ds = PairDataset(rep.pairs, 0, False, labels=LabelSpec(NUM_CLASSES, 'boxes'))
        out = []
        for i, pair in enumerate(ds.pairs):
            if ds.boxes[i] is None:
                raise BenchError(f'{folder}/boxes has no box file for pair {pair.stem!r}')
            vis_raw, ir_raw, label = ds.load(i)
            vis, ir = imaging.preprocess_pair(vis_raw, ir_raw, ds.norm)
            out.append({'stem': pair.stem, 'vis': vis, 'ir': ir, 'label': label,
                        'boxes': ds.boxes[i]})
    except DatasetError as exc:
        raise BenchError(str(exc)) from None
    return out


def _fuse(model, vis: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """Fused H x W x 3 float image of one pair (padded to the model's multiple and back)."""
    from ssvif_ros import imaging
    from ssvif_train.tensor_imaging import hwc_to_nchw, nchw_to_hwc
    m = int(getattr(model, 'pad_multiple', 1))
    v, pad = imaging.pad_to_multiple(vis, m)
    t, _ = imaging.pad_to_multiple(ir, m)
    with torch.no_grad():
        fused = model(hwc_to_nchw(v), hwc_to_nchw(t))                      # 1 x 3 x Hp x Wp
    return imaging.unpad(nchw_to_hwc(fused), pad)


def source_images(name: str, pairs, model=None, progress=False):
    """The 8-bit 3-channel image of every pair for one source (what a method would save)."""
    from ssvif_ros import imaging
    out = []
    for p in _bar(pairs, progress, f'images {name}'):
        if name == 'visible':
            img = p['vis']
        elif name == 'thermal':
            img = p['ir']
        elif name == 'maxluma':
            img = imaging.max_luma_fusion(p['vis'], p['ir'])
        else:
            img = _fuse(model, p['vis'], p['ir'])
        out.append(imaging.to_uint8(img))
    return out


def load_fusion_model(name: str, path: str):
    """Eval-mode fusion model from a training or model checkpoint (3-channel models only)."""
    from ssvif_train.models.registry import load_model
    try:
        model = load_model(path)
    except (FileNotFoundError, ValueError) as exc:
        raise BenchError(f'--ckpt {name}={path}: {exc}') from None
    if getattr(model, 'channels', 3) != 3:
        raise BenchError(f'--ckpt {name}={path}: a {model.channels}-channel model; the bench '
                         'compares 3-channel fused images')
    return model


def train_fusion(name: str, args, threads: int) -> str:
    """Train source ``name`` with a short budget into ``--work``; return its checkpoint."""
    from ssvif_train.cli import main as train_main
    config, extra = FUSION[name]
    out = Path(args.work) / f'fusion_{name}'
    epochs = args.train_fusion_epochs
    sets = [f'train.epochs={epochs}', f'train.stage1_max_epochs={max(1, epochs // 2)}',
            f'train.progress={"true" if on_terminal() else "false"}', 'train.val_metrics=[]',
            f'train.threads={threads}', f'data.seed={args.seeds[0]}'] + extra
    if args.max_train:
        sets.append(f'data.max_pairs={args.max_train}')
    sets += list(args.fusion_set)
    argv = [str(REPO / 'config' / 'train' / config), '--data', str(args.data), '--out',
            str(out), '--overwrite'] + [a for s in sets for a in ('--set', s)]
    rc = train_main(argv)
    if rc != 0:
        raise BenchError(f'training source {name} failed (ssvif-train exit {rc}); see above')
    best = out / 'best.pt'
    return str(best if best.is_file() else out / 'last.pt')


# ---------------------------------------------------------------------------------- training
def _crop_origin(label_shape, crop, boxes, rng, object_crop):
    h, w = label_shape
    y0 = int(rng.integers(0, h - crop + 1))
    x0 = int(rng.integers(0, w - crop + 1))
    if object_crop > 0 and rng.random() < object_crop and boxes:
        b = boxes[int(rng.integers(len(boxes)))]
        ox, oy = min(int(b.cx * w), w - 1), min(int(b.cy * h), h - 1)
        x0 = min(max(ox - int(rng.integers(0, crop)), 0), w - crop)
        y0 = min(max(oy - int(rng.integers(0, crop)), 0), h - crop)
    return y0, x0


def _batch(images, pairs, idx, crop, seed, epoch, object_crop):
    """N x 3 x c x c float images and N x c x c int64 labels of the pairs ``idx``."""
    xs, ys = [], []
    for i in idx:
        img, label = images[i], pairs[i]['label']
        rng = np.random.default_rng([seed, epoch, int(i)])
        y0, x0 = _crop_origin(label.shape, crop, pairs[i]['boxes'], rng, object_crop)
        x = img[y0:y0 + crop, x0:x0 + crop]
        y = label[y0:y0 + crop, x0:x0 + crop]
        if rng.random() < 0.5:
            x, y = x[:, ::-1], y[:, ::-1]
        if rng.random() < 0.5:
            x, y = x[::-1], y[::-1]
        xs.append(np.ascontiguousarray(x.transpose(2, 0, 1)))
        ys.append(np.ascontiguousarray(y))
    x = torch.from_numpy(np.stack(xs)).float() / 255.0                      # N x 3 x c x c
    return x, torch.from_numpy(np.stack(ys)).long()                         # N x c x c


def train_seg(images, pairs, args, seed: int, progress=False, desc=''):
    """Train :class:`DownstreamSegNet` on one source's images; return it in eval mode."""
    from ssvif_train import losses
    h, w = pairs[0]['label'].shape
    crop = min(args.crop, h // STRIDE * STRIDE, w // STRIDE * STRIDE)
    torch.manual_seed(seed)
    net = DownstreamSegNet(NUM_CLASSES).train()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    n = len(images)
    steps = math.ceil(n / args.batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, args.epochs * steps))
    bar = _bar(None, progress, desc, total=args.epochs * steps)
    for epoch in range(args.epochs):
        order = np.random.default_rng([seed, epoch]).permutation(n)
        for k in range(steps):
            idx = order[k * args.batch:(k + 1) * args.batch]
            x, y = _batch(images, pairs, idx, crop, seed, epoch, args.object_crop)
            terms = losses.segmentation_terms(net(x), y)
            loss = terms['seg_ce'] + terms['seg_dice']
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f'{float(loss):.3f}')
    if bar is not None:
        bar.close()
    return net.eval()


def evaluate(net, images, pairs):
    """Box scores of the net's full-resolution class maps (:class:`BoxScorer` result)."""
    from ssvif_ros import imaging, labels
    from ssvif_train.tensor_imaging import hwc_to_nchw
    scorer = labels.BoxScorer(CLASSES)
    with torch.no_grad():
        for img, p in zip(images, pairs):
            x, pad = imaging.pad_to_multiple(img.astype(np.float32) / 255.0, STRIDE)
            x = hwc_to_nchw(x)                                                 # 1 x 3 x Hp x Wp
            logits = F.interpolate(net(x), size=x.shape[-2:], mode='bilinear',
                                   align_corners=False)
            ids = logits.argmax(1)[0].numpy().astype(np.uint8)                 # Hp x Wp
            scorer.add(imaging.unpad(ids, pad), p['boxes'])
    return scorer.result()


# ---------------------------------------------------------------------------------- report
def _cell(values):
    vals = [v for v in values if v == v]
    if not vals:
        return 'n/a'
    if len(values) == 1:
        return f'{vals[0]:.3f}'
    sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return f'{np.mean(vals):.3f} ± {sd:.3f}'


def image_delta(images, reference) -> float:
    """Mean abs difference of two lists of 8-bit images, in grey levels (0..255)."""
    return float(np.mean([np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16)))
                          for a, b in zip(images, reference)]))


def table(results, seeds, command: str, n_train: int, n_val: int, deltas=None) -> str:
    """The Markdown report: command line, table, and what it shows.

    ``deltas``: per source, the mean abs difference of its validation images from the max-luma
    rule's (grey levels), so a row whose images equal the rule's is read as the rule.
    """
    deltas = deltas or {}
    lines = [f'Downstream segmentation (bench/seg_downstream.py): one DownstreamSegNet per '
             f'source, {n_train} msrs/train pairs (box labels), scored on {n_val} msrs/val '
             f'pairs; seeds {", ".join(str(s) for s in seeds)}.', '',
             f'    {command}', '',
             '| source | box-F1 | ' + ' | '.join(f'{c} F1' for c in CLASSES)
             + ' | image vs max-luma |',
             '|---|---|' + '---|' * len(CLASSES) + '---|']
    for name, runs in results.items():
        cells = [_cell([r['box_f1'] for r in runs])]
        cells += [_cell([r['classes'][c]['f1'] for r in runs]) for c in CLASSES]
        cells.append(f'{deltas[name]:.2f}' if name in deltas else 'n/a')
        lines.append(f'| {TITLES[name]} | ' + ' | '.join(cells) + ' |')
    lines.append('')
    if len(seeds) > 1:
        lines.append(f'Cells: mean ± standard deviation over {len(seeds)} seeds. A difference '
                     'between two rows smaller than their spread is not claimed.')
    else:
        lines.append('One seed: no spread is measured, so no difference between rows is '
                     'claimed; run with --seeds 0 1 2.')
    lines.append('Box-F1: mean F1 of person, car, bike (box recall at 20 % coverage, pixel '
                 'precision within boxes grown by 5 px; ssvif-eval boxes). Image vs max-luma: '
                 'mean abs difference of the validation images from the max-luma rule images, in '
                 'grey levels.')
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------------- CLI
def _no_nan(x):
    """JSON-safe copy: NaN (an undefined score) becomes null."""
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_no_nan(v) for v in x]
    if isinstance(x, float) and x != x:
        return None
    return x


def _bar(iterable, progress, desc, total=None):
    return progress_bar(iterable, total=total, desc=desc, quiet=not progress, leave=False,
                        dynamic_ncols=True)


def build_parser():
    """Argument parser of the bench."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', default=str(REPO.parent / 'shared' / 'data' / 'msrs'),
                    help='MSRS folder with train/ and val/ (vi, ir, boxes)')
    ap.add_argument('--sources', nargs='+', choices=SOURCES, default=None,
                    help='rows to run (default: the rules + sources with a checkpoint)')
    ap.add_argument('--ckpt', action='append', default=[], metavar='NAME=PATH',
                    help=f'fusion checkpoint of a source ({", ".join(FUSION)}); repeatable')
    ap.add_argument('--train-fusion-epochs', type=int, default=0, metavar='N',
                    help='train fusion sources without --ckpt here, N epochs each')
    ap.add_argument('--fusion-set', action='append', default=[], metavar='KEY=VALUE',
                    help='override for those trainings (ssvif-train --set), repeatable')
    ap.add_argument('--work', default='runs/seg_downstream',
                    help='folder for fusion models trained here')
    ap.add_argument('--seeds', type=int, nargs='+', default=[0])
    ap.add_argument('--epochs', type=int, default=40, help='segmentation training epochs')
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--crop', type=int, default=160)
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--object-crop', type=float, default=0.7,
                    help='share of crops placed on a random box')
    ap.add_argument('--max-train', type=int, default=0, help='first N train pairs (0 = all)')
    ap.add_argument('--max-val', type=int, default=0, help='first N val pairs (0 = all)')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--out', default=None, help='also write the Markdown report here')
    ap.add_argument('--json', default=None, help='write every score here')
    return ap


def _check(args):
    for key in ('epochs', 'batch', 'threads'):
        if getattr(args, key) < 1:
            raise BenchError(f'--{key} must be >= 1, got {getattr(args, key)}')
    if args.crop < STRIDE or args.crop % STRIDE:
        raise BenchError(f'--crop must be a multiple of {STRIDE}, got {args.crop}')
    if not 0.0 <= args.object_crop <= 1.0 or args.lr <= 0:
        raise BenchError('--object-crop must be in [0, 1] and --lr > 0')
    if args.train_fusion_epochs < 0 or args.max_train < 0 or args.max_val < 0:
        raise BenchError('--train-fusion-epochs, --max-train and --max-val must be >= 0')
    ckpts = {}
    for item in args.ckpt:
        name, sep, path = item.partition('=')
        if not sep or name not in FUSION or not path:
            raise BenchError(f'--ckpt {item!r}: expected NAME=PATH with NAME one of '
                             f'{", ".join(FUSION)}')
        if not os.path.isfile(path):
            raise BenchError(f'--ckpt {name}: checkpoint not found: {path}')
        ckpts[name] = path
    if args.sources is None:
        fusion = list(FUSION) if args.train_fusion_epochs else [s for s in FUSION if s in ckpts]
        args.sources = list(RULES) + fusion
    for s in args.sources:
        if s in FUSION and s not in ckpts and not args.train_fusion_epochs:
            raise BenchError(f'source {s} needs --ckpt {s}=PATH or --train-fusion-epochs N')
    if not (Path(args.data) / 'train').is_dir() or not (Path(args.data) / 'val').is_dir():
        raise BenchError(f'--data {args.data}: needs train/ and val/ folders (MSRS layout)')
    return ckpts


def main(argv=None) -> int:
    """Run the bench; 0 on success, 2 on bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser()
    args = ap.parse_args(argv)
    command = 'python bench/seg_downstream.py ' + ' '.join(shlex.quote(a) for a in argv)
    try:
        ckpts = _check(args)
        torch.set_num_threads(args.threads)
        data = Path(args.data)
        progress = on_terminal()
        # Every fusion model first: a bad checkpoint stops the run before any training.
        models = {name: load_fusion_model(name, ckpts[name])
                  for name in args.sources if name in ckpts}
        for name in args.sources:
            if name in FUSION and name not in models:
                models[name] = load_fusion_model(name, train_fusion(name, args, args.threads))
        train = load_split(data, 'train', args.max_train)
        val = load_split(data, 'val', args.max_val)
        results, deltas = {}, {}
        rule = source_images('maxluma', val)
        for name in args.sources:
            model = models.get(name)
            tr_imgs = source_images(name, train, model, progress)
            va_imgs = source_images(name, val, model, progress)
            deltas[name] = image_delta(va_imgs, rule)
            runs = []
            for seed in args.seeds:
                net = train_seg(tr_imgs, train, args, seed, progress, f'{name} seed {seed}')
                runs.append(evaluate(net, va_imgs, val))
            results[name] = runs
    except BenchError as exc:
        print(f'seg_downstream: error: {exc}', file=sys.stderr)
        return 2
    report = table(results, args.seeds, command, len(train), len(val), deltas)
    print(report, end='')
    if args.out:
        Path(args.out).write_text(report, encoding='utf-8')
    if args.json:
        Path(args.json).write_text(json.dumps(_no_nan(
            {'command': command, 'seeds': args.seeds, 'n_train': len(train), 'n_val': len(val),
             'image_vs_maxluma': deltas, 'results': results}), indent=2), encoding='utf-8')
    return 0


if __name__ == '__main__':
    sys.exit(main())
