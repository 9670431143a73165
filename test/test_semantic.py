"""Semantic training with labels: label layer, supervised loss, trainer, selection, export."""
import csv
import math
import os

from conftest import DATA, need

import numpy as np
import pytest
import torch

from ssvif_ros import imaging, labels
from ssvif_ros.dataset_paths import list_pairs
from ssvif_train import losses
from ssvif_train.cli import main as train_main
from ssvif_train.config import ConfigError, load_config
from ssvif_train.data import build_datasets, label_spec, PairDataset
from ssvif_train.discovery import discover_pairs
from ssvif_train.export import main as export_main
from ssvif_train.trainer import Trainer

SMALL = ['data.crop=64', 'train.batch_size=2', 'train.steps_per_epoch=2',
         'train.progress=false', 'train.threads=1', 'train.val_metrics=[]',
         'model.name=rtfusion', 'model.args={padding: replicate}', 'model.segformer=b0',
         'model.classes=msrs', 'model.num_classes=4', 'model.head_hidden=8']


def sets(items):
    return [a for s in items for a in ('--set', s)]


def read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


@pytest.fixture
def roadscene_dir():
    """The RoadScene pairs (unlabelled, sizes vary), or skip."""
    return need(DATA / 'roadscene', 'RoadScene data')


def test_mixed_labelled_and_unlabelled_pairs(msrs_boxes, roadscene_dir, tmp_path):
    root = msrs_boxes(6)
    os.remove(root / 'boxes' / sorted(os.listdir(root / 'boxes'))[0])   # one pair unlabelled
    cfg = load_config(None, [f'data.root={root}', f'data.extra=[{roadscene_dir}]',
                             'data.val_fraction=0'] + SMALL)
    train, val, rep = build_datasets(cfg)
    assert len(val) == 0
    assert train.kinds.count('boxes') == 5 and train.kinds.count('none') == 1 + 221
    assert '5 with box files' in rep.summary() and 'roadscene' in rep.summary()
    kinds = {}
    for i in range(len(train)):
        if train.kinds[i] in kinds and i < 300 and i % 37:
            continue
        vis, ir, lab = train[i]
        assert vis.shape == ir.shape == (3, 64, 64) and lab.shape == (64, 64)
        assert lab.dtype == torch.int64
        kinds.setdefault(train.kinds[i], []).append(set(lab.unique().tolist()))
    assert all(v == {255} for v in kinds['none'])
    assert set().union(*kinds['boxes']) <= {0, 1, 2, 3, 255}
    # a batch mixing both kinds reaches the supervised loss with only the labelled pixels
    loader = torch.utils.data.DataLoader(train, batch_size=len(train), shuffle=False)
    lab = next(iter(loader))[2]
    boxed = torch.tensor([k == 'boxes' for k in train.kinds])
    assert (lab[boxed] != 255).any() and (lab[~boxed] == 255).all()


def test_label_follows_crops_and_flips(tmp_path):
    """A bright visible square sits exactly where the box is; every crop keeps them aligned."""
    for i in range(3):
        vis = np.zeros((80, 100, 3), np.uint8)
        vis[30:50, 40:70] = 255                                # x 40..69, y 30..49
        imaging.write_image(tmp_path / 'vi' / f'{i}.png', vis)
        imaging.write_image(tmp_path / 'ir' / f'{i}.png', np.full((80, 100), 50, np.uint8))
        (tmp_path / 'boxes').mkdir(exist_ok=True)
        (tmp_path / 'boxes' / f'{i}.txt').write_text('0 0.55 0.5 0.3 0.25\n')  # person
    cfg = load_config(None, [f'data.root={tmp_path}', 'data.box_core=1.0', 'data.box_margin=0',
                             'data.crop=48'] + SMALL[1:])
    rep = discover_pairs(str(tmp_path))
    ds = PairDataset(rep.pairs, 48, True, seed=1, labels=label_spec(cfg))
    n_flipped = 0
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i in range(3):
            vis, _, lab = ds[i]
            bright = vis[0] > 0.5
            person = lab == labels.PERSON
            # the ellipse core lies inside the bright rectangle, the rest of it is ignored
            assert not (person & ~bright).any()
            assert ((lab == 0) & bright).sum() == 0
            n_flipped += int(person.any())
    assert n_flipped > 0


def test_malformed_box_file_stops_training_with_file_and_line(msrs_boxes, tmp_path, capsys):
    root = msrs_boxes(4)
    bad = root / 'boxes' / sorted(os.listdir(root / 'boxes'))[1]
    os.remove(bad)
    bad.write_text('0 0.5 0.5 0.1 0.1\n1 0.5 0.5 1.5 0.1\n')
    rc = train_main(['--data', str(root), '--out', str(tmp_path / 'run')] + sets(SMALL))
    err = capsys.readouterr().err
    assert rc == 2 and f'{bad.name}:2: w = 1.5 is outside 0..1' in err
    assert err.count('\n') == 1


def test_semantic_config_is_checked():
    with pytest.raises(ConfigError, match='model.num_classes must be 4..9'):
        load_config(None, ['model.classes=msrs', 'model.num_classes=15'])
    with pytest.raises(ConfigError, match='needs model.classes msrs'):
        load_config(None, ['train.monitor=box_f1'])
    with pytest.raises(ConfigError, match='data.labels must be one of'):
        load_config(None, ['data.labels=polygons'])
    with pytest.raises(ConfigError, match='loss.sup_class_weights must be empty or 4'):
        load_config(None, ['model.classes=msrs', 'model.num_classes=4',
                           'loss.sup_class_weights=[1, 1, 3]'])
    with pytest.raises(ConfigError, match='loss.sup_class_weights'):
        load_config(None, ['model.classes=msrs', 'model.num_classes=4',
                           'loss.sup_class_weights=[1, 1, 0, 3]'])
    assert load_config(None, ['model.classes=msrs', 'model.num_classes=4',
                              'loss.sup_class_weights=[1, 1, 1, 3]']
                       ).loss.sup_class_weights == [1, 1, 1, 3]


def test_supervised_class_weights_by_hand():
    # two labelled pixels, background and bike, with known log-probabilities
    logits = torch.zeros(1, 4, 1, 3)
    logits[0, 0, 0, 0] = 2.0                 # pixel 0: background favoured
    logits[0, 1, 0, 1] = 1.0                 # pixel 1 (a bike): car favoured
    label = torch.tensor([[[0, 3, 255]]])
    lp0 = 2.0 - math.log(math.exp(2.0) + 3.0)          # log p(background) at pixel 0
    lp1 = 0.0 - math.log(math.exp(1.0) + 3.0)          # log p(bike) at pixel 1
    plain = losses.supervised_terms(logits, logits, label)
    assert float(plain['sup_ce_a']) == pytest.approx(-(lp0 + lp1) / 2, abs=1e-6)
    w = torch.tensor([1.0, 1.0, 1.0, 3.0])
    weighted = losses.supervised_terms(logits, logits, label, class_weights=w)
    # weighted mean over labelled pixels: (1 * -lp0 + 3 * -lp1) / (1 + 3)
    assert float(weighted['sup_ce_b']) == pytest.approx(-(lp0 + 3 * lp1) / 4, abs=1e-6)
    assert torch.allclose(weighted['sup_dice_a'], plain['sup_dice_a'])   # Dice unweighted


def test_supervised_terms_ignore_unlabelled_pixels():
    torch.manual_seed(0)
    la = torch.randn(2, 4, 8, 8)
    lb = torch.randn(2, 4, 4, 4)            # S predicts at a lower resolution
    label = torch.full((2, 8, 8), 255, dtype=torch.long)
    label[0, :4] = 2
    label[1, 5:, 2:6] = 0
    t = losses.supervised_terms(la, lb, label, eps=1.0)
    valid = label != 255
    ce_a = torch.nn.functional.cross_entropy(la.permute(0, 2, 3, 1)[valid], label[valid])
    assert torch.allclose(t['sup_ce_a'], ce_a)
    # changing the logits of ignored pixels changes nothing
    la2 = la.clone()
    la2[0, :, 6:] += 100.0
    t2 = losses.supervised_terms(la2, lb, label, eps=1.0)
    assert all(torch.allclose(t[k], t2[k]) for k in t)
    # Dice counts only the classes present in the labels: a perfect prediction of a batch with
    # background and persons scores ~0, not the 0.5 that two absent classes would add
    perfect = torch.full((1, 8, 8), 0, dtype=torch.long)
    perfect[0, 2:4, 2:4] = labels.PERSON
    logits = 50.0 * torch.nn.functional.one_hot(perfect, 4).permute(0, 3, 1, 2).float()
    t3 = losses.supervised_terms(logits, logits, perfect, eps=1.0)
    # ratios 2*60/(120+1) and 2*4/(8+1): dice = 1 - (120/121 + 8/9) / 2
    assert float(t3['sup_dice_a']) == pytest.approx(1 - (120 / 121 + 8 / 9) / 2, abs=1e-5)
    # a batch without labelled pixels: zeros, still connected to both branches
    none = losses.supervised_terms(la.requires_grad_(), lb.requires_grad_(),
                                   torch.full((2, 8, 8), 255, dtype=torch.long))
    total = losses.supervised_total(none)
    assert float(total.detach()) == 0.0
    total.backward()
    assert la.grad is not None and lb.grad is not None


def test_one_supervised_step_reaches_every_parameter_of_h_and_s(msrs_boxes, tmp_path):
    root = msrs_boxes(4)
    cfg = load_config(None, [f'data.root={root}', 'data.val_fraction=0',
                             'train.two_stage=false'] + SMALL)
    tr = Trainer(cfg, str(tmp_path / 'run'))
    vis, ir, lab = next(iter(tr.loader(tr.train_ds, train=True)))
    assert (lab != 255).any()
    fused, la, lb = tr.net(vis, ir, True)
    sup = losses.supervised_total(losses.supervised_terms(la, lb, lab))
    for name, mod in (('H', tr.net.head), ('S', tr.net.seg), ('F', tr.net.fusion)):
        params = [p for p in mod.parameters() if p.requires_grad]
        grads = torch.autograd.grad(sup, params, retain_graph=True, allow_unused=True)
        missing = [n for (n, p), g in zip(mod.named_parameters(), grads)
                   if g is None or not torch.any(g != 0)]
        if name == 'F':  # only the decoder's output head is off the segmentation path
            assert all(n.startswith(('head_', 'lat2', 'dec1')) for n in missing), missing
        else:
            assert not missing, (name, missing)
    before = {k: v.clone() for k, v in tr.net.head.state_dict().items()}
    row = tr.train_step(vis, ir, lab)
    assert row['loss_sup'] > 0 and np.isfinite(row['loss_total'])
    after = tr.net.head.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before if 'weight' in k)


def test_stage_two_selects_on_validation_box_f1(msrs_boxes, tmp_path):
    """Stage I monitors L_fusion; stage II resets the best and judges box-F1.

    So best.pt is a stage-II checkpoint.
    """
    root = msrs_boxes(10)
    out = tmp_path / 'run'
    rc = train_main(['--data', str(root), '--out', str(out)]
                    + sets(SMALL + ['train.epochs=3', 'train.stage1_max_epochs=2',
                                    'data.val_fraction=0.2']))
    assert rc == 0
    rows = read_csv(out / 'epochs.csv')
    assert [r['stage'] for r in rows] == ['1', '1', '2']
    assert all(0.0 <= float(r['val_box_f1']) <= 1.0 for r in rows)
    assert {'val_person_f1', 'val_car_f1', 'val_bike_f1', 'train_sup'} <= set(rows[0])
    best = torch.load(out / 'best.pt', weights_only=True)
    assert best['state']['stage'] == 2 and best['state']['epoch'] == 3
    assert best['head']['classes'] == 'msrs' and best['head']['padding_mode'] == 'replicate'
    tr = Trainer(load_config(str(out / 'config.json')), str(out), resume=True)
    assert tr.schedule.monitor_name(1) == 'fusion' and tr.schedule.monitor_name(2) == 'box_f1'
    assert tr.schedule.best_val == -float(rows[2]['val_box_f1'])


def test_early_stopping_never_ends_stage_one_with_csc(msrs_boxes, tmp_path):
    root = msrs_boxes(4)
    cfg = load_config(None, [f'data.root={root}', 'data.val_fraction=0', 'train.patience=2']
                      + SMALL)
    sch = Trainer(cfg, str(tmp_path / 'run')).schedule
    sch.bad_epochs = 5
    sch.stage = 1
    assert not sch.should_stop()          # stage I ends by its switch rule or cap
    sch.stage = 2
    assert sch.should_stop()
    sch.bad_epochs = 1
    assert not sch.should_stop()


def test_write_masks_tool(msrs_boxes, tmp_path, capsys):
    root = msrs_boxes(3)
    rc = train_main(['--data', str(root), '--out', str(tmp_path / 'x'),
                     '--write-masks', str(tmp_path / 'masks')] + sets(SMALL))
    assert rc == 0 and 'wrote 3 pixel labels' in capsys.readouterr().out
    ids = sorted(os.listdir(tmp_path / 'masks' / 'ids'))
    assert len(ids) == 3 and len(os.listdir(tmp_path / 'masks' / 'overlay')) == 3
    m = imaging.read_image(tmp_path / 'masks' / 'ids' / ids[0])
    assert m.shape == (480, 640) and set(np.unique(m)) <= {0, 1, 2, 3, 255}
    assert not (tmp_path / 'x').exists()  # nothing trained


def test_semantic_export_card_and_onnx_class_map_match_torch(msrs_boxes, msrs_dir, tmp_path):
    root = msrs_boxes(4)
    run = tmp_path / 'run'
    assert train_main(['--data', str(root), '--out', str(run)]
                      + sets(SMALL + ['train.epochs=1', 'train.two_stage=false',
                                      'data.val_fraction=0'])) == 0
    out = tmp_path / 'model'
    assert export_main([str(run / 'last.pt'), '--out', str(out), '--copy-checkpoint',
                        '--seg-upsample', 'nearest']) == 0
    from ssvif_ros.backends import create_backend
    ort_b = create_backend('onnxruntime', str(out), threads=1)
    torch_b = create_backend('torch', str(out), threads=1)
    assert ort_b.class_names == ('background', 'car', 'person', 'bike')
    assert ort_b.palette.shape == (4, 3)
    assert tuple(ort_b.palette[labels.PERSON]) == labels.SCORED_COLOURS[labels.PERSON]
    vi_path, ir_path = list_pairs(msrs_dir / 'val')[0]
    vis = imaging.read_image(vi_path, mode='rgb')
    ir = imaging.read_image(ir_path, mode='gray')
    v, t = imaging.preprocess_pair(vis, ir)
    fa, ia = ort_b.infer(v, t)
    fb, ib = torch_b.infer(v, t)
    diff = np.abs(fa.astype(np.int16) - fb)  # uint8 images: grey levels
    assert diff.max() <= 1 and (diff == 0).mean() >= 0.999
    assert (ia == ib).mean() >= 0.999 and ia.max() < 4


def test_pixel_labels_msrs_and_fmb_give_semantic_ids(tmp_path):
    rng = np.random.default_rng(0)
    fmb_ids = np.array([[0, 8, 9, 13, 255, 2]], np.uint8).repeat(40, 0).repeat(8, 1)  # 40 x 48
    msrs_ids = np.array([[0, 1, 2, 3, 4, 255]], np.uint8).repeat(40, 0).repeat(8, 1)
    for layout, (vi, ir, lab), ids in (('fmb', ('Visible', 'Infrared', 'Label'), fmb_ids),
                                       ('msrs', ('vi', 'ir', 'Segmentation_labels'), msrs_ids)):
        root = tmp_path / layout
        imaging.write_image(root / vi / 'a.png', rng.integers(0, 255, (40, 48, 3), np.uint8))
        imaging.write_image(root / ir / 'a.png', rng.integers(0, 255, (40, 48), np.uint8))
        imaging.write_image(root / lab / 'a.png', ids)
        cfg = load_config(None, [f'data.root={root}'] + SMALL[1:])
        ds = PairDataset(discover_pairs(str(root)).pairs, 0, False, labels=label_spec(cfg))
        assert ds.kinds == ['pixels']
        got = ds[0][2][0].tolist()[::8]
        # FMB: person 8 -> 2, car 9 -> 1, bicycle 13 -> 3, others -> 0; MSRS ids >= 4 -> 0
        want = [0, 2, 1, 3, 255, 0] if layout == 'fmb' else [0, 1, 2, 3, 0, 255]
        assert got == want, layout


def test_csc_ramp_and_confidence_threshold():
    from ssvif_train.weighting import csc_ramp
    assert csc_ramp(0, 0) == 1.0 and csc_ramp(7, 0) == 1.0          # the paper: no ramp
    assert csc_ramp(0, 10) == pytest.approx(np.exp(-5.0))
    assert csc_ramp(5, 10) == pytest.approx(np.exp(-1.25))
    assert csc_ramp(10, 10) == 1.0 and csc_ramp(25, 10) == 1.0
    # pseudo labels below the threshold are ignored, and only those
    la = torch.zeros(1, 4, 2, 2)
    lb = torch.zeros(1, 4, 2, 2)
    la[0, 2, 0, 0] = 10.0                                             # confident person
    lb[0, 1, 1, 1] = 1.0                                              # unsure car (p = 0.48)
    lab = losses.pseudo_label(la, lb, threshold=0.9)
    assert lab[0, 0, 0] == labels.PERSON and (lab[0].flatten()[1:] == 255).all()
    assert losses.pseudo_label(la, lb)[0, 1, 1] == labels.CAR          # paper: every pixel
    t = losses.csc_terms(la, lb, (2, 2), threshold=0.9)
    ce_a = torch.nn.functional.cross_entropy(la[:, :, 0, 0], torch.tensor([labels.PERSON]))
    assert torch.allclose(t['ce_a'], ce_a)
    none = losses.csc_terms(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2), (2, 2),
                            threshold=0.9)
    assert all(float(v) == 0.0 for v in none.values())


def test_object_crops_hold_objects_more_often(msrs_boxes):
    root = msrs_boxes(12)
    found = {}
    for share in (0.0, 1.0):
        cfg = load_config(None, [f'data.root={root}', 'data.val_fraction=0',
                                 f'data.object_crop={share}'] + SMALL)
        train, _, _ = build_datasets(cfg)
        hits = 0
        for epoch in range(4):
            train.set_epoch(epoch)
            for i in range(len(train)):
                lab = train[i][2]
                hits += int(((lab > 0) & (lab != 255)).any())
        found[share] = hits
    # 12 real MSRS pairs, 4 epochs of 64 x 64 crops: uniform crops rarely meet an object
    assert found[1.0] >= 0.8 * 48 and found[1.0] >= 2 * found[0.0], found
