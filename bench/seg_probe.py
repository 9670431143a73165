#!/usr/bin/env python3
"""Labels-only probe: how far can F + H get on the box labels alone, and how fast.

Not a training recipe: it isolates the segmentation side of a deployable model to find what
holds its box scores down. It trains the fusion model's encoder and the segmentation head H of a
model (``--init``: a ``model.pt`` or training checkpoint; default the embedded model) on the
weak pixel labels of the msrs/train boxes with CE (``--class-weights``) + Dice over the labelled
pixels, nothing else: no fusion loss, no S, no CSC, no unlabelled pairs. Every ``--every``
seconds it scores H's class map (logits upsampled bilinearly) on msrs/val with
:class:`ssvif_ros.labels.BoxScorer`, as ``ssvif-eval boxes``.

Inputs are whole 640x480 frames (``--crop 0``, with horizontal flips only) or random square
crops; labels ``--rule weak`` (:func:`ssvif_ros.labels.boxes_to_mask`, box core ``--core``)
or ``--rule box`` (every box pixel is its class; a 3 px ring around each box is ignored).

    .venv/bin/python bench/seg_probe.py --rule weak --minutes 20 --threads 1

Prints one line per evaluation (minutes, step, box-F1, per-class F1). Exit status 2 with a
one-line reason for bad input.
"""
import argparse
from pathlib import Path
import sys
import time

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load_split(root: Path, rule: str, core: float):
    """[(vis H x W x 3 float, ir H x W float, label H x W uint8, boxes)] of a boxes split."""
    from ssvif_ros import imaging, labels
    cmap = labels.box_class_map(labels.DEFAULT_BOX_CLASSES)
    out = []
    for box_file in sorted((root / 'boxes').glob('*.txt')):
        stem = box_file.stem
        vis = imaging.read_image(root / 'vi' / f'{stem}.png', 'rgb').astype(np.float32) / 255
        ir = imaging.read_image(root / 'ir' / f'{stem}.png', 'gray').astype(np.float32)
        boxes = labels.read_boxes(box_file, cmap)
        h, w = ir.shape
        if rule == 'weak':
            mask = labels.boxes_to_mask(boxes, (w, h), ir, core=core)
        else:
            mask = np.zeros((h, w), np.uint8)
            for b in boxes:
                x0, y0, x1, y1 = b.rect(w, h, 3)
                mask[y0:y1, x0:x1] = labels.IGNORE
            for b in sorted(boxes, key=lambda b: -(b.w * b.h)):
                x0, y0, x1, y1 = b.rect(w, h)
                mask[y0:y1, x0:x1] = b.cls
        out.append((vis, ir / 255, mask, boxes))
    return out


def main(argv=None) -> int:
    """Train and score; see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', default=None, help='MSRS folder with train/ and val/ boxes')
    ap.add_argument('--init', default=str(REPO / 'ssvif_ros/models/default/model.pt'))
    ap.add_argument('--rule', choices=('weak', 'box'), default='weak')
    ap.add_argument('--core', type=float, default=0.8)
    ap.add_argument('--crop', type=int, default=0, help='square crop size (0: whole frames)')
    ap.add_argument('--batch', type=int, default=2)
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--class-weights', default='1,1,1,3')
    ap.add_argument('--minutes', type=float, default=20.0)
    ap.add_argument('--every', type=float, default=180.0, help='seconds between evaluations')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args(argv)
    import torch
    import torch.nn.functional as tf
    from ssvif_ros import labels
    from ssvif_ros.dataset_paths import shared_data_dir
    from ssvif_train.losses import hybrid_terms
    from ssvif_train.models.registry import torch_load_checked
    from ssvif_train.network import SSVIFNet
    data = Path(args.data) if args.data else shared_data_dir() / 'msrs'
    for split in ('train', 'val'):
        if not (data / split / 'boxes').is_dir():
            print(f'seg_probe: {data / split / "boxes"}: no box folder', file=sys.stderr)
            return 2
    try:
        weights = torch.tensor([float(x) for x in args.class_weights.split(',')])
        ckpt = torch_load_checked(args.init)
        net = SSVIFNet.from_checkpoint(ckpt, args.init)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f'seg_probe: {exc}'.splitlines()[0], file=sys.stderr)
        return 2
    if net.head is None or len(weights) != net.head.num_classes:
        print(f'seg_probe: {args.init} needs a segmentation head with {len(weights)} classes',
              file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train = load_split(data / 'train', args.rule, args.core)
    val = load_split(data / 'val', args.rule, args.core)
    fusion, head = net.fusion, net.head
    opt = torch.optim.Adam(list(fusion.parameters()) + list(head.parameters()), lr=args.lr)

    def tensor(x):
        return torch.from_numpy(np.ascontiguousarray(x))

    def logits(vis, ir):                                   # N x n x H/8 x W/8
        return head(fusion.seg_features(fusion.backbone(vis, ir)))

    def evaluate():
        fusion.eval()
        head.eval()
        scorer = labels.BoxScorer()
        with torch.no_grad():
            for vis, ir, _, boxes in val:
                v = tensor(vis).permute(2, 0, 1)[None]                      # 1 x 3 x H x W
                i = tensor(ir)[None, None].repeat(1, 3, 1, 1)               # 1 x 3 x H x W
                lg = tf.interpolate(logits(v, i), size=ir.shape, mode='bilinear',
                                    align_corners=False)
                scorer.add(lg.argmax(1)[0].numpy().astype(np.uint8), boxes)
        fusion.train()
        head.train()
        r = scorer.result()
        return (f'box-F1 {r["box_f1"]:.3f} ('
                + ', '.join(f'{k} {v["f1"]:.3f}' for k, v in r['classes'].items()) + ')')

    rng = np.random.default_rng(args.seed)
    step = 0
    print(f'0.0 min step 0 {evaluate()}', flush=True)
    t0 = last = time.time()
    while step == 0 or time.time() - t0 < args.minutes * 60:
        vs, irs, ms = [], [], []
        for k in rng.choice(len(train), args.batch, replace=False):
            vis, ir, mask, _ = train[k]
            if args.crop:
                h, w = ir.shape
                y = rng.integers(0, h - args.crop + 1)
                x = rng.integers(0, w - args.crop + 1)
                c = args.crop
                vis, ir, mask = vis[y:y + c, x:x + c], ir[y:y + c, x:x + c], mask[y:y + c, x:x + c]
            if rng.random() < 0.5:
                vis, ir, mask = vis[:, ::-1], ir[:, ::-1], mask[:, ::-1]
            vs.append(tensor(vis).permute(2, 0, 1))
            irs.append(tensor(ir)[None].repeat(3, 1, 1))
            ms.append(tensor(mask.astype(np.int64)))
        vis, ir, mask = torch.stack(vs), torch.stack(irs), torch.stack(ms)
        lg = tf.interpolate(logits(vis, ir), size=mask.shape[-2:], mode='bilinear',
                            align_corners=False)
        ce, dice = hybrid_terms(lg, mask, 1.0, labels.IGNORE, True, weights)
        opt.zero_grad()
        (ce + dice).backward()
        opt.step()
        step += 1
        if time.time() - last > args.every:
            last = time.time()
            print(f'{(last - t0) / 60:.1f} min step {step} {evaluate()}', flush=True)
    print(f'{(time.time() - t0) / 60:.1f} min step {step} {evaluate()} (end)', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
