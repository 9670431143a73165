"""Boxes, weak pixel labels and box scores (ssvif_ros.labels, ssvif-eval boxes): known answers."""
import json
import math

import numpy as np
import pytest

from ssvif_ros import imaging, labels
from ssvif_ros.eval_cli import main as eval_main

YOLO = labels.box_class_map(labels.DEFAULT_BOX_CLASSES)  # 0 person, 1 bicycle, 2 car


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_class_ids_follow_msrs_and_aliases():
    assert labels.SEMANTIC_CLASSES[:4] == ('unlabelled', 'car', 'person', 'bike')
    assert YOLO == {0: labels.PERSON, 1: labels.BIKE, 2: labels.CAR}
    assert labels.class_id('Bicycle') == 3 and labels.class_id('pedestrian') == 2
    with pytest.raises(labels.BoxError, match="unknown class 'truck'"):
        labels.class_id('truck')
    with pytest.raises(labels.BoxError, match='unknown class'):
        labels.class_id('curve', num_classes=4)  # id 4 exists only with 9 classes
    pal = labels.semantic_palette(4)
    assert pal.shape == (4, 3) and len({tuple(c) for c in pal}) == 4


def test_every_real_msrs_box_file_parses(msrs_dir):
    counts = {}
    n_files = 0
    for split in ('train', 'val'):
        for f in sorted((msrs_dir / split / 'boxes').glob('*.txt')):
            n_files += 1
            for b in labels.read_boxes(f, YOLO):
                counts[b.cls] = counts.get(b.cls, 0) + 1
    # numbers from ../shared/data/README.md: 532 + 57 person, 83 + 8 bicycle, 283 + 24 car
    assert n_files == 241
    assert counts == {labels.PERSON: 589, labels.BIKE: 91, labels.CAR: 307}


@pytest.mark.parametrize('text, message', [
    ('0 0.5 0.5 0.1\n', r'a\.txt:1: expected 5 fields'),
    ('0 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1 0.1 7\n', r'a\.txt:2: expected 5 fields .*got 6'),
    ('0 0.5 1.2 0.1 0.1\n', r'a\.txt:1: cy = 1\.2 is outside 0\.\.1'),
    ('0 -0.01 0.5 0.1 0.1\n', r'a\.txt:1: cx = -0\.01 is outside'),
    ('0 0.5 0.5 nan 0.1\n', r'a\.txt:1: w = nan is outside'),
    ('5 0.5 0.5 0.1 0.1\n', r'a\.txt:1: unknown class 5'),
    ('person 0.5 0.5 0.1 0.1\n', r"a\.txt:1: class 'person' is not an integer"),
    ('\n\n0 0.5 0.5 0.1 x\n', r'a\.txt:3: cx cy w h must be numbers'),
])
def test_malformed_box_lines_name_file_and_line(tmp_path, text, message):
    with pytest.raises(labels.BoxError, match=message):
        labels.read_boxes(write(tmp_path / 'a.txt', text), YOLO)


def test_empty_file_means_no_objects_and_blank_lines_are_skipped(tmp_path):
    assert labels.read_boxes(write(tmp_path / 'e.txt', ''), YOLO) == []
    got = labels.read_boxes(write(tmp_path / 'b.txt', '\n2 0.5 0.5 0.2 0.4  \n\n'), YOLO)
    assert got == [labels.Box(labels.CAR, 0.5, 0.5, 0.2, 0.4)]


def test_box_rectangles_are_floor_ceil_and_clipped():
    b = labels.Box(labels.PERSON, 0.25, 0.5, 0.2, 0.4)
    assert b.rect(100, 100) == (15, 30, 35, 70)
    assert b.rect(100, 100, grow=5) == (10, 25, 40, 75)
    edge = labels.Box(labels.CAR, 0.99, 0.01, 0.1, 0.1)
    assert edge.rect(100, 100) == (94, 0, 100, 6)
    assert b.rect(99, 61) == (14, 18, 35, 43)  # 14.85 -> 14, 34.65 -> 35, 18.3 -> 18, 42.7 -> 43


def synthetic_scene():
    """120 x 100 thermal frame: cool noisy background, a warm person, a cold car body."""
    rng = np.random.default_rng(3)
    ir = (60 + rng.normal(0, 3, (100, 120))).clip(0, 255)
    ir[20:80, 40:56] = 200                                  # the person: x 40..55, y 20..79
    person = labels.Box(labels.PERSON, 48 / 120, 50 / 100, 30 / 120, 70 / 100)   # loose box
    car = labels.Box(labels.CAR, 90 / 120, 70 / 100, 40 / 120, 30 / 100)        # x 70..110
    return ir.astype(np.uint8), person, car


def test_box_to_mask_on_a_synthetic_scene():
    ir, person, car = synthetic_scene()
    mask = labels.boxes_to_mask([person, car], (120, 100), ir, margin=3, core=0.5, z_hot=2.0)
    assert mask.shape == (100, 120) and mask.dtype == np.uint8
    # every warm person pixel is labelled person, though half of them lie outside the core
    assert np.all(mask[20:80, 40:56] == labels.PERSON)
    # cold pixels of the loose person box outside its core are uncertain: ignored
    px0, py0, px1, py1 = person.rect(120, 100)
    assert (px0, py0, px1, py1) == (33, 15, 63, 85)
    assert mask[16, 34] == labels.IGNORE and mask[50, 61] == labels.IGNORE
    # the car has no thermal evidence: its core ellipse is car, its corners ignored
    cx0, cy0, cx1, cy1 = car.rect(120, 100)
    assert mask[70, 90] == labels.CAR and mask[cy0, cx0] == labels.IGNORE
    core = mask[cy0:cy1, cx0:cx1] == labels.CAR
    area = (cx1 - cx0) * (cy1 - cy0)
    # pi/4 * 0.5^2 = 0.196 of the box, plus the ~2 % of noise pixels 2 SD above the ring
    assert 0.17 < core.sum() / area < 0.23
    # outside every box (and its 3 px ring) is background; the ring is ignored
    assert mask[2, 2] == 0 and mask[50, 5] == 0
    assert mask[50, px0 - 2] == labels.IGNORE and mask[50, px0 - 4] == 0
    # without a thermal frame only the cores are object
    bare = labels.boxes_to_mask([person], (120, 100))
    assert bare[50, 48] == labels.PERSON and bare[50, 36] == labels.IGNORE


def test_smaller_box_is_drawn_over_a_larger_one():
    big = labels.Box(labels.CAR, 0.5, 0.5, 0.8, 0.8)
    small = labels.Box(labels.PERSON, 0.5, 0.5, 0.1, 0.2)
    for order in ([big, small], [small, big]):
        m = labels.boxes_to_mask(order, (100, 100))
        assert m[50, 50] == labels.PERSON and m[50, 30] == labels.CAR


def test_thermal_rule_marks_hot_pixels_as_person():
    ir = np.full((50, 60), 40, np.uint8)
    ir[10:20, 10:15] = 250
    ids = labels.thermal_rule(ir)
    assert set(np.unique(ids)) == {0, labels.PERSON}
    assert np.array_equal(ids == labels.PERSON, ir == 250)


def hand_case():
    """100 x 100 prediction with known counts (see test_box_scores_hand_computed)."""
    pred = np.zeros((100, 100), np.uint8)
    pred[30:70, 15:25] = labels.PERSON     # 400 px, half of the person box: found
    pred[30:70, 35:38] = labels.PERSON     # 120 px right of the box, inside the +5 px growth
    pred[0:10, 90:95] = labels.PERSON      # 50 px far from any person box
    pred[40:50, 65:70] = labels.CAR        # 50 px = 12.5 % of the car box: not found
    boxes = [labels.Box(labels.PERSON, 0.25, 0.5, 0.2, 0.4),   # x 15..35, y 30..70
             labels.Box(labels.CAR, 0.75, 0.5, 0.2, 0.2)]      # x 65..85, y 40..60
    return pred, boxes


def test_box_scores_hand_computed():
    pred, boxes = hand_case()
    s = labels.BoxScorer()
    s.add(pred, boxes)
    r = s.result()
    person, car, bike = (r['classes'][c] for c in ('person', 'car', 'bike'))
    assert (person['boxes'], person['found'], person['pred_pixels'],
            person['pred_in_box']) == (1, 1, 570, 520)
    assert person['recall'] == 1.0 and person['precision'] == pytest.approx(52 / 57)
    assert person['f1'] == pytest.approx(104 / 109)
    assert (car['boxes'], car['found'], car['pred_pixels'], car['pred_in_box']) == (1, 0, 50, 50)
    assert car['recall'] == 0.0 and car['precision'] == 1.0 and car['f1'] == 0.0
    assert math.isnan(bike['f1'])                          # no box, no pixel: left out
    assert r['box_f1'] == pytest.approx(52 / 109)
    # exactly 20 % of a box counts as found; counts add up over images
    edge = np.zeros((100, 100), np.uint8)
    edge[40:44, 65:85] = labels.CAR                        # 80 of 400 px
    s.add(edge, boxes)
    assert s.result()['classes']['car']['found'] == 1
    assert s.result()['classes']['car']['recall'] == 0.5


def test_eval_boxes_cli_hand_case_and_baseline(tmp_path):
    pred, boxes = hand_case()
    imaging.write_image(tmp_path / 'pred' / 'img1.png', pred)
    imaging.write_image(tmp_path / 'pred' / 'unboxed.png', pred)   # no box file: not scored
    write(tmp_path / 'boxes' / 'img1.txt', '0 0.25 0.5 0.2 0.4\n2 0.75 0.5 0.2 0.2\n')
    write(tmp_path / 'boxes' / 'img2.txt', '')                     # no objects, no prediction
    ir = np.full((100, 100), 30, np.uint8)
    ir[40:60, 20:30] = 255                                         # hot person, 200 px in box
    imaging.write_image(tmp_path / 'ir' / 'img1.png', ir)
    imaging.write_image(tmp_path / 'ir' / 'img2.png', np.full((100, 100), 30, np.uint8))
    rc = eval_main(['boxes', '--pred', str(tmp_path / 'pred'), '--name', 'model',
                    '--boxes', str(tmp_path / 'boxes'), '--baseline-ir', str(tmp_path / 'ir'),
                    '--out', str(tmp_path / 'out'), '--quiet'])
    assert rc == 0
    doc = json.loads((tmp_path / 'out' / 'box_scores.json').read_text())
    model = doc['methods']['model']
    assert model['box_f1'] == pytest.approx(52 / 109)
    assert model['classes']['bike']['f1'] is None and model['n_images'] == 1
    assert doc['problems'] == ['model: img2: no prediction, not scored']
    # the rule's threshold is 34.5 + 2 * 31.5 = 97.5: exactly the 200 hot pixels, 25 % of the
    # person box (found, all inside); no car pixels (recall 0); the flat img2 marks nothing
    rule = doc['methods'][doc_rule_name(doc)]
    assert rule['classes']['person'] == {'recall': 1.0, 'precision': 1.0, 'f1': 1.0, 'boxes': 1,
                                         'found': 1, 'pred_pixels': 200, 'pred_in_box': 200,
                                         'f1_ci': [1.0, 1.0]}
    assert rule['classes']['car']['f1'] == 0.0 and rule['box_f1'] == 0.5
    md = (tmp_path / 'out' / 'box_scores.md').read_text()
    assert '| model | **0.477** | 0.477–0.477 |' in md and 'thermal rule' in md
    # marked share of the one scored image: person 570 px, car 50 px of 10000
    share = model['marked_share']
    assert share['person'] == {'mean': 0.057, 'max': 0.057}
    assert share['object']['max'] == pytest.approx(0.062) and share['n_images'] == 1
    assert '| model | 1 | 5.7 / 5.7 | 0.5 / 0.5 |' in md


def doc_rule_name(doc):
    return next(n for n in doc['methods'] if n.startswith('thermal rule'))


def test_eval_boxes_errors_are_one_line(tmp_path, capsys):
    imaging.write_image(tmp_path / 'pred' / 'a.png', np.zeros((10, 10), np.uint8))
    write(tmp_path / 'boxes' / 'a.txt', '0 0.5 0.5 0.1 0.1\n3 0.5 0.5 0.1 0.1\n')
    rc = eval_main(['boxes', '--pred', str(tmp_path / 'pred'), '--boxes', str(tmp_path / 'boxes'),
                    '--out', str(tmp_path / 'out')])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count('\n') == 0
    assert err.endswith('a.txt:2: unknown class 3 (box classes: 0, 1, 2)')
    rc = eval_main(['boxes', '--pred', str(tmp_path / 'pred'), '--boxes', str(tmp_path / 'nope'),
                    '--out', str(tmp_path / 'out')])
    assert rc == 2 and 'box (--boxes) folder not found' in capsys.readouterr().err
    rc = eval_main(['boxes', '--pred', str(tmp_path / 'pred'), '--boxes', str(tmp_path / 'boxes'),
                    '--classes', 'person,truck', '--out', str(tmp_path / 'out')])
    assert rc == 2 and "unknown class 'truck'" in capsys.readouterr().err


def test_pixel_label_ids_map_to_semantic_ids():
    msrs = np.array([[0, 1, 2, 3, 4, 8, 255]], np.uint8)
    assert labels.map_pixel_labels(msrs, 'msrs', 4).tolist() == [[0, 1, 2, 3, 0, 0, 255]]
    assert labels.map_pixel_labels(msrs, 'msrs', 9).tolist() == [[0, 1, 2, 3, 4, 8, 255]]
    fmb = np.array([[0, 1, 8, 9, 10, 13, 12, 14, 255]], np.uint8)
    assert labels.map_pixel_labels(fmb, 'fmb', 4).tolist() == [[0, 0, 2, 1, 1, 3, 3, 0, 255]]


def _one_image(found: bool):
    """A 100 x 100 map with one person box, found and precise (True) or missed (False)."""
    pred = np.zeros((100, 100), np.uint8)
    if found:
        pred[40:60, 20:30] = labels.PERSON
    return pred, [labels.Box(labels.PERSON, 0.25, 0.5, 0.1, 0.2)]


def test_bootstrap_interval_known_answer():
    # two images, one found (F1 1) and one missed: resamples {A, A} F1 1, {A, B} 2/3, {B, B} 0
    # with probabilities 1/4, 1/2, 1/4, so the 95 % percentile interval is exactly 0..1
    s = labels.BoxScorer(classes=('person',))
    for found in (True, False):
        s.add(*_one_image(found))
    r = s.result()
    assert r['box_f1'] == pytest.approx(2 / 3) and r['n_images'] == 2
    assert r['box_f1_ci'] == (0.0, 1.0) and r['classes']['person']['f1_ci'] == (0.0, 1.0)
    # the same image 25 times: every resample is that image, the interval is the point
    s = labels.BoxScorer(classes=('person',))
    for _ in range(25):
        s.add(*_one_image(True))
    assert s.result()['box_f1_ci'] == (1.0, 1.0)
    # a 40-image mix narrows round the point estimate, and the seed makes it repeatable
    s = labels.BoxScorer(classes=('person',))
    for i in range(40):
        s.add(*_one_image(i % 4 != 0))
    lo, hi = s.result()['box_f1_ci']
    point = s.result()['box_f1']
    assert 0.0 < lo < point < hi < 1.0 and hi - lo < 0.3
    assert labels.bootstrap_f1(s.per_image, 1) == labels.bootstrap_f1(s.per_image, 1)
    box, per_class = labels.bootstrap_f1([], 3)
    assert all(math.isnan(v) for v in box) and len(per_class) == 3


def test_vectorized_f1_agrees_with_class_counts():
    rng = np.random.default_rng(3)
    for _ in range(200):
        boxes, pred = rng.integers(0, 4, size=2)
        found, in_box = rng.integers(0, boxes + 1), rng.integers(0, pred + 1)
        want = labels.ClassCounts(boxes, found, pred, in_box).scores()['f1']
        got = float(labels.f1_from_counts(np.array([boxes, found, pred, in_box])))
        assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want)


def test_marked_share_hand_case():
    m = labels.MarkedShare()
    ids = np.zeros((10, 10), np.uint8)
    ids[:2] = labels.CAR                                   # 20 %
    ids[5, :5] = labels.BIKE                               # 5 %
    assert m.add(ids) == {'person': 0.0, 'car': 0.2, 'bike': 0.05, 'object': 0.25}
    m.add(np.zeros((4, 4), np.uint8))
    r = m.result()
    assert r['car'] == {'mean': 0.1, 'max': 0.2} and r['object']['mean'] == 0.125
    assert r['n_images'] == 2 and math.isnan(labels.MarkedShare().result()['car']['mean'])


def test_eval_marked_cli_and_errors(tmp_path, capsys):
    ids = np.zeros((10, 10), np.uint8)
    ids[:3] = labels.PERSON
    imaging.write_image(tmp_path / 'a' / 'x.png', ids)
    imaging.write_image(tmp_path / 'a' / 'y.png', np.zeros((10, 10), np.uint8))
    rc = eval_main(['marked', '--pred', str(tmp_path / 'a'), '--name', 'm',
                    '--out', str(tmp_path / 'out'), '--quiet'])
    assert rc == 0
    doc = json.loads((tmp_path / 'out' / 'marked_share.json').read_text())
    assert doc['methods']['m']['person'] == {'mean': 0.15, 'max': 0.3}
    assert '| m | 2 | 15.0 / 30.0 |' in (tmp_path / 'out' / 'marked_share.md').read_text()
    capsys.readouterr()
    rc = eval_main(['marked', '--pred', str(tmp_path / 'nope'), '--out', str(tmp_path / 'o')])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count('\n') == 0 and 'prediction (--pred) folder not found' in err
    rc = eval_main(['marked', '--pred', str(tmp_path / 'a'), '--classes', 'tree',
                    '--out', str(tmp_path / 'o')])
    assert rc == 2 and "unknown class 'tree'" in capsys.readouterr().err


# Machado, Oliveira and Fernandes (2009), severity 1: linear-RGB simulation of colour vision.
CVD = {
    'protan': [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
               [-0.003882, -0.048116, 1.051998]],
    'deutan': [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
               [-0.011820, 0.042940, 0.968881]],
    'tritan': [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
               [0.004733, 0.691367, 0.303900]],
}


def test_scored_class_colours_stay_apart_for_colour_blind_readers():
    from skimage.color import deltaE_ciede2000, rgb2lab
    pal = labels.semantic_palette(4)[[labels.CAR, labels.PERSON, labels.BIKE]] / 255.0
    lin = np.where(pal <= 0.04045, pal / 12.92, ((pal + 0.055) / 1.055) ** 2.4)
    worst = np.inf
    for m in [np.eye(3)] + [np.asarray(v) for v in CVD.values()]:
        sim = np.clip(lin @ m.T, 0, 1)
        srgb = np.where(sim <= 0.0031308, 12.92 * sim, 1.055 * sim ** (1 / 2.4) - 0.055)
        lab = rgb2lab(srgb[None])[0]
        worst = min(worst, min(deltaE_ciede2000(lab[i], lab[j])
                               for i, j in ((0, 1), (0, 2), (1, 2))))
    # 30 CIEDE2000 units: unmistakable side by side (the old red / dark-red pair had 14.6)
    assert worst > 30
