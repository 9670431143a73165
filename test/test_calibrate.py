"""ssvif-calibrate: offset choice by hand, offsets in the deployed graph, the CLI on real pairs."""
import json

from conftest import REPO

import numpy as np
import pytest
import torch

from ssvif_ros import imaging, labels
from ssvif_ros.backends import create_backend
from ssvif_train import calibrate
from ssvif_train.discovery import discover_pairs
from ssvif_train.export import main as export_main
from ssvif_train.models.registry import torch_load_checked
from ssvif_train.network import class_ids_from_logits

DEFAULT_PT = REPO / 'ssvif_ros' / 'models' / 'default' / 'model.pt'


def _scene(n_images=10, person_logit=-0.7):
    """Low-res logits (1 x 4 x 8 x 8, stride 8) with one faint person per image, and its box.

    Background logit 0 everywhere; the person's logit is ``person_logit`` on the 2 x 2 cells of
    its box (pixels 16..32) and -5 elsewhere; car and bike -5 everywhere.
    """
    logits, boxes = [], []
    for _ in range(n_images):
        lg = torch.full((1, 4, 8, 8), -5.0)
        lg[0, 0] = 0.0
        lg[0, labels.PERSON, 2:4, 2:4] = person_logit
        logits.append(lg)
        boxes.append([labels.Box(labels.PERSON, 24 / 64, 24 / 64, 16 / 64, 16 / 64)])
    return logits, boxes


def _ids_of(logits):
    def ids_of(k, bias):
        return class_ids_from_logits(logits[k], (64, 64), 'nearest',
                                     torch.from_numpy(bias))[0].numpy()
    return ids_of


def test_choose_bias_finds_the_smallest_offset_that_reveals_a_faint_class():
    logits, boxes = _scene()
    grid = (-1.0, 0.5, 1.0, 1.5, 2.0)
    got = calibrate.choose_bias(_ids_of(logits), boxes, 4, grid)
    # Offset 0 and 0.5 leave the person below background (F1 0); 1.0 and more find every box
    # with every person pixel inside it (F1 1): the smallest offset of that plateau wins.
    assert got['bias'] == [0.0, 0.0, 1.0, 0.0]
    assert got['table']['person'] == {'-1.00': 0.0, '+0.00': 0.0, '+0.50': 0.0,
                                      '+1.00': 1.0, '+1.50': 1.0, '+2.00': 1.0}
    assert set(got['table']) == {'person'}   # no car or bike box: nothing to calibrate
    # Too few boxes, or a gain below --min-gain: the offset stays 0.
    assert calibrate.choose_bias(_ids_of(logits), boxes, 4, grid, min_boxes=11)['bias'][2] == 0
    assert calibrate.choose_bias(_ids_of(logits), boxes, 4, grid, min_gain=1.5)['bias'][2] == 0


def test_choose_bias_lowers_a_class_that_floods_the_background():
    # A person logit of +0.3 over the whole image (2.0 on the person): offset -1 keeps it to
    # its box.
    logits, boxes = _scene()
    for lg in logits:
        lg[0, labels.PERSON] = 0.3
        lg[0, labels.PERSON, 2:4, 2:4] = 2.0
    got = calibrate.choose_bias(_ids_of(logits), boxes, 4, (-1.0, 1.0))
    assert got['bias'][labels.PERSON] == -1.0


def test_offsets_reach_the_onnx_class_map(msrs_dir, tmp_path):
    """A calibrated checkpoint exports with its offsets: ONNX ids = arg-max(logits + offset)."""
    ckpt = torch_load_checked(DEFAULT_PT)
    n = ckpt['head']['num_classes']
    bias = [0.0] * n
    bias[labels.PERSON] = 4.0
    # The embedded model is itself calibrated: the plain checkpoint drops its offsets.
    raw = tmp_path / 'raw.pt'
    ckpt['head'] = {k: v for k, v in ckpt['head'].items() if k != 'class_bias'}
    torch.save(ckpt, raw)
    cal = tmp_path / 'cal.pt'
    calibrate.write_calibrated(str(raw), {'bias': bias, 'split': 'test'}, str(cal))
    plain, biased = tmp_path / 'plain', tmp_path / 'biased'
    for src, out in ((raw, plain), (cal, biased)):
        assert export_main([str(src), '--out', str(out), '--seg-upsample', 'nearest',
                            '--logits', '--copy-checkpoint']) == 0
    card = json.loads((biased / 'model.json').read_text())
    assert card['class_bias'] == bias
    assert 'class_bias' not in json.loads((plain / 'model.json').read_text())
    assert torch_load_checked(biased / 'model.pt')['head']['class_bias'] == bias
    import onnxruntime as ort
    from ssvif_ros.dataset_paths import list_pairs
    vi, ir = list_pairs(msrs_dir / 'val')[0]
    v, t = imaging.preprocess_pair(imaging.read_image(vi, 'rgb'), imaging.read_image(ir, 'gray'))
    # the frame graph's inputs: 1 x H x W x 3 uint8 and the 1 x H x W thermal plane
    feed = {'vis': imaging.to_uint8(v)[None], 'ir': t[None, :, :, 0].copy()}
    runs = {}
    for name, folder in (('plain', plain), ('biased', biased)):
        sess = ort.InferenceSession(str(folder / 'model.onnx'),
                                    providers=['CPUExecutionProvider'])
        runs[name] = sess.run(['class_ids', 'logits'], feed)
    ids_p, lg_p = runs['plain']
    ids_b, lg_b = runs['biased']
    np.testing.assert_allclose(lg_b[0, labels.PERSON], lg_p[0, labels.PERSON] + 4.0, atol=1e-4)
    want = class_ids_from_logits(torch.from_numpy(lg_p), ids_p.shape[1:], 'nearest',
                                 torch.tensor(bias))
    assert (ids_b == want.numpy()).mean() > 0.999
    assert (ids_b == labels.PERSON).sum() > (ids_p == labels.PERSON).sum()
    # The torch backend reads the offsets from model.pt and agrees with ONNX Runtime.
    _, ids_t = create_backend('torch', str(biased), threads=1).infer(v, t)
    assert (ids_t == ids_b[0]).mean() > 0.999


def test_calibrate_cli_scores_what_the_exported_model_does(msrs_boxes, tmp_path, capsys):
    root = msrs_boxes(12)
    out = tmp_path / 'cal.pt'
    assert calibrate.main([str(DEFAULT_PT), '--data', str(root), '--split', 'all',
                           '--seg-upsample', 'nearest', '--min-boxes', '1',
                           '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'person:' in printed and str(out) in printed
    rec = torch_load_checked(out)['calibration']
    assert rec['pairs'] == 12 and len(rec['bias']) == 4 and rec['bias'][0] == 0.0
    assert all(b in rec['grid'] for b in rec['bias'])
    for name, row in rec['table'].items():   # the chosen offset is on its class's best plateau
        chosen = rec['bias'][labels.class_id(name)]
        assert row[f'{chosen:+.2f}'] >= max(row.values()) - rec['plateau'] or chosen == 0.0
    # The exported model, run through the node's backend, scores what calibration reported.
    model = tmp_path / 'model'
    assert export_main([str(out), '--out', str(model), '--seg-upsample', 'nearest']) == 0
    backend = create_backend('onnxruntime', str(model), threads=1)
    scorer = labels.BoxScorer()
    cmap = labels.box_class_map(labels.DEFAULT_BOX_CLASSES)
    for p in discover_pairs(str(root)).pairs:
        v, t = imaging.preprocess_pair(imaging.read_image(p.vi, 'rgb'),
                                       imaging.read_image(p.ir, 'gray'))
        scorer.add(backend.infer(v, t)[1], labels.read_boxes(p.boxes, cmap))
    assert scorer.result()['box_f1'] == pytest.approx(rec['box_f1_after'], abs=1e-3)


def test_calibrate_holdout_is_the_runs_validation_split(msrs_boxes, tmp_path):
    root = msrs_boxes(20)
    rec = calibrate.calibrate(str(DEFAULT_PT), str(root), 'holdout', seg_upsample='nearest')
    assert rec['pairs'] == 2   # data.val_fraction 0.1 of the checkpoint's run, rounded up


def test_calibrate_bad_input_exits_2_with_one_line(msrs_subset, msrs_boxes, tmp_path, capsys):
    cases = [
        ([str(tmp_path / 'missing.pt'), '--data', str(msrs_boxes(2))], 'checkpoint not found'),
        ([str(DEFAULT_PT), '--data', str(msrs_subset(4)), '--split', 'all'], 'box file'),
        ([str(DEFAULT_PT), '--data', str(tmp_path / 'nowhere')], 'nowhere'),
        ([str(DEFAULT_PT), '--data', str(tmp_path), '--out', str(DEFAULT_PT)], 'overwrite'),
    ]
    for argv, words in cases:
        assert calibrate.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    assert not (tmp_path / 'missing-calibrated.pt').exists()
