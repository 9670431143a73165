"""Shared check: a registered model + head exports through ssvif-export and runs in the backends.

Used by test_segfanet.py and test_emma.py: a checkpoint in the trainer's format is written (the
model's record, a SegHead, the configuration), ``ssvif-export`` turns it into ONNX + model card,
and the ONNX Runtime and torch backends fuse real MSRS pairs, padded sizes included.
"""
import os

import numpy as np
import onnx
import torch

from ssvif_ros import imaging
from ssvif_ros.backends import create_backend
from ssvif_train.config import config_from_dict
from ssvif_train.export import main as export_main
from ssvif_train.models.registry import atomic_torch_save, model_record
from ssvif_train.models.segmentation import SegHead


def write_checkpoint(model, path, num_classes):
    """A checkpoint as the trainer writes it (format, fusion, head, config), untrained."""
    cfg = config_from_dict({'model': {'name': model.model_name, 'args': model.model_config,
                                      'classes': 'msrs', 'num_classes': num_classes,
                                      'head_hidden': 16}})
    torch.manual_seed(1)
    head = SegHead(model.feature_channels, num_classes, 16, 'replicate').eval()
    atomic_torch_save({
        'format': 'ssvif-train/1', 'fusion': model_record(model),
        'head': {'in_channels': model.feature_channels, 'num_classes': num_classes,
                 'hidden': 16, 'padding_mode': 'replicate', 'classes': 'msrs',
                 'state_dict': head.state_dict()},
        'config': cfg.to_dict(), 'config_digest': cfg.digest(), 'state': {'epoch': 0}}, path)
    return head


def _real_pair(msrs_dir):
    stem = sorted(os.listdir(msrs_dir / 'val' / 'vi'))[0]
    vis = imaging.read_image(msrs_dir / 'val' / 'vi' / stem, mode='rgb')
    ir = imaging.read_image(msrs_dir / 'val' / 'ir' / stem, mode='gray')
    return imaging.preprocess_pair(vis, ir)


def export_and_compare(model, tmp_path, msrs_dir, num_classes, functional_convs=0,
                       sizes=((480, 640), (250, 333))):
    """Export ``model`` + a head, then compare ONNX Runtime with torch on real pairs.

    ``functional_convs``: convolutions the model calls with ``F.conv2d`` (not modules).
    """
    ckpt = tmp_path / 'ckpt.pt'
    head = write_checkpoint(model, ckpt, num_classes)
    out = check_exported(ckpt, tmp_path / 'model', msrs_dir, model.model_name, num_classes,
                         sizes)
    graph = onnx.load(out / 'model.onnx')
    # One forward pass: every conv of the deployed modules appears exactly once in the graph
    # (training-only convs such as SegFANet's IRM image projections do not appear at all).
    convs = [n for n in graph.graph.node if n.op_type == 'Conv']
    deployed = [m for name, m in model.named_modules()
                if type(m) is torch.nn.Conv2d and not name.endswith('to_image')]
    head_convs = [m for m in head.modules() if type(m) is torch.nn.Conv2d]
    assert len(convs) == len(deployed) + len(head_convs) + functional_convs
    return out


def check_exported(ckpt, out, msrs_dir, model_name, num_classes,
                   sizes=((480, 640), (250, 333))):
    """``ssvif-export`` a checkpoint into ``out``; ONNX Runtime and torch agree on real pairs."""
    assert export_main([str(ckpt), '--out', str(out), '--copy-checkpoint']) == 0
    graph = onnx.load(out / 'model.onnx')
    onnx.checker.check_model(graph, full_check=True)
    assert [i.name for i in graph.graph.input] == ['vis', 'ir']
    assert [o.name for o in graph.graph.output] == ['fused', 'class_ids']
    import json
    card = json.loads((out / 'model.json').read_text())
    assert card['model']['name'] == model_name and card['num_classes'] == num_classes
    assert card['parity']['fused_max_grey_diff'] <= 1
    assert card['parity']['fused_equal_fraction'] >= 0.999
    ort_b = create_backend('onnxruntime', str(out), threads=1)
    torch_b = create_backend('torch', str(out), threads=1)
    v, t = _real_pair(msrs_dir)
    for h, w in sizes:  # the second size needs padding to the model's multiple
        f1, c1 = ort_b.infer(v[:h, :w], t[:h, :w])
        f2, c2 = torch_b.infer(v[:h, :w], t[:h, :w])
        assert f1.shape == (h, w, 3) and c1.shape == (h, w) and c1.dtype == np.uint8
        assert f1.dtype == f2.dtype == np.uint8  # uint8 RGB: rounded inside the graph
        diff = np.abs(f1.astype(np.int16) - f2)
        assert diff.max() <= 1 and (diff == 0).mean() >= 0.999
        assert (c1 == c2).mean() >= 0.999 and c1.max() < num_classes
    return out
