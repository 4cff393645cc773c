"""Metrics against values computed by hand on 4 x 4 label maps."""
import json

import numpy as np
import pytest

from dmnet_core.metrics import (
    SegmentationScorer,
    confusion,
    plot_per_frame,
    summary_markdown,
)

NAMES = ['bg', 'a', 'b']


def _maps(rows: list[str]) -> np.ndarray:
    """'.' = background, 'a' = 1, 'b' = 2."""
    lut = {'.': 0, 'a': 1, 'b': 2}
    return np.array([[lut[ch] for ch in r] for r in rows], dtype=np.uint8)


# Frame 1: class a 6 GT px (counted when min_gt_pixels=2), class b 2 GT px (not counted).
GT1 = _maps(['aaa.', 'aaa.', '..bb', '....'])
PR1 = _maps(['aa..', 'aaaa', '..b.', '....'])
# Frame 2: only b in GT (3 px, counted), nothing predicted.
GT2 = _maps(['....', '....', '.bbb', '....'])
PR2 = _maps(['....', '....', '....', '....'])
# Frame 3, second sequence: empty GT, one false-positive pixel of a.
GT3 = _maps(['....', '....', '....', '....'])
PR3 = _maps(['a...', '....', '....', '....'])


@pytest.fixture
def scored() -> tuple[SegmentationScorer, list[dict]]:
    s = SegmentationScorer(NAMES, min_gt_pixels=2)
    frames = [s.update(PR1, GT1, 's1'), s.update(PR2, GT2, 's1'), s.update(PR3, GT3, 's2')]
    return s, frames


def test_confusion_rows_are_gt() -> None:
    conf = confusion(PR1, GT1, 3)
    assert conf.sum() == 16
    assert conf[1, 1] == 5 and conf[1, 0] == 1 and conf[0, 1] == 1
    assert conf[2, 2] == 1 and conf[2, 0] == 1


def test_per_frame_scores(scored) -> None:
    _, (f1, f2, f3) = scored
    # a: TP 5, FP 1, FN 1; b has only 2 GT px, not counted by the seed rule.
    assert f1['iou'] == pytest.approx(5 / 7)
    assert f1['dice'] == pytest.approx(5 / 6)
    assert f1['per_class_iou'] == {'a': pytest.approx(5 / 7), 'b': None}
    # Challenge IoU counts every class present: mean(5/7, 1/2).
    assert f1['challenge_iou'] == pytest.approx(17 / 28)
    # Binary: 8 GT instrument px, 7 predicted, 6 in both -> 12 / 15.
    assert f1['binary_dice'] == pytest.approx(0.8)
    assert f1['flicker_pred'] is None
    assert f2['iou'] == 0.0 and f2['dice'] == 0.0 and f2['binary_dice'] == 0.0
    assert f2['flicker_pred'] == pytest.approx(7 / 16)
    assert f2['flicker_gt'] == pytest.approx(7 / 16)
    # Nothing counted by the seed rule, but the false positive counts for challenge IoU.
    assert f3['iou'] is None and f3['dice'] is None
    assert f3['challenge_iou'] == 0.0
    assert f3['flicker_pred'] is None          # first frame of s2


def test_summary_protocols(scored) -> None:
    s, _ = scored
    out = s.summary()
    # Seed paper: a counted on frame 1 only, b on frame 2 only; mean over the two classes.
    assert out['mean_iou'] == pytest.approx((5 / 7 + 0) / 2)
    assert out['mean_dice'] == pytest.approx((5 / 6 + 0) / 2)
    assert out['per_class']['a'] == pytest.approx(
        {'iou': 5 / 7, 'dice': 5 / 6, 'frames': 1, 'dataset_iou': 5 / 8,
         'dataset_dice': 10 / 13, 'gt_pixels': 6, 'pred_pixels': 7})
    assert out['per_class']['b']['frames'] == 1
    # Binary Dice over frames with > 2 GT instrument px (frames 1 and 2).
    assert out['binary_dice'] == pytest.approx(0.4)
    assert out['binary_dice_all_frames'] == pytest.approx(0.8 / 3)
    p = out['protocols']
    assert p['seed_paper']['mean_iou'] == pytest.approx(5 / 14)
    assert p['challenge_iou']['mean_iou'] == pytest.approx(17 / 28 / 3)
    assert p['challenge_iou']['frames'] == 3
    # Whole set: a TP 5 FP 2 FN 1 -> 5/8; b TP 1 FP 0 FN 4 -> 1/5.
    assert p['dataset_iou']['per_class_iou'] == pytest.approx({'a': 5 / 8, 'b': 1 / 5})
    assert p['dataset_iou']['mean_iou'] == pytest.approx((5 / 8 + 1 / 5) / 2)
    assert out['frames'] == 3 and out['sequences'] == 2
    ts = out['temporal_stability']
    assert ts['pairs'] == 1
    assert ts['pred_flicker'] == pytest.approx(7 / 16)
    assert ts['excess_flicker'] == pytest.approx(0.0)
    seqs = out['per_sequence']
    assert seqs['s1']['frames'] == 2 and seqs['s2']['frames'] == 1
    assert seqs['s1']['mean_iou'] == pytest.approx(5 / 14)
    assert seqs['s2']['mean_iou'] is None and seqs['s2']['challenge_iou'] == 0.0
    json.dumps(out)                            # JSON-serialisable, no NaN objects


def test_more_than_min_gt_pixels_rule() -> None:
    """With the default rule, a class with exactly 10 GT pixels is not counted; 11 is."""
    s = SegmentationScorer(['bg', 'tool'])
    gt = np.zeros((8, 8), np.uint8)
    gt.flat[:10] = 1
    f = s.update(np.zeros_like(gt), gt)
    assert f['iou'] is None and s.summary()['mean_iou'] is None
    gt.flat[:11] = 1
    f = s.update(np.zeros_like(gt), gt)
    assert f['iou'] == 0.0
    assert s.summary()['per_class']['tool']['frames'] == 1


def test_perfect_prediction_and_absent_class() -> None:
    s = SegmentationScorer(['bg', 'a', 'b', 'c'], min_gt_pixels=0)
    gt = np.zeros((6, 6), np.uint8)
    gt[1:4, 1:4] = 1
    gt[5, :] = 2
    f = s.update(gt.copy(), gt)
    assert f['iou'] == 1.0 and f['dice'] == 1.0 and f['binary_dice'] == 1.0
    out = s.summary()
    # Class c never occurs: undefined, and left out of every mean.
    assert out['per_class']['c']['iou'] is None
    assert out['mean_iou'] == 1.0 and out['dataset_iou'] == 1.0 and out['challenge_iou'] == 1.0


def test_flicker_moving_object_vs_jitter() -> None:
    """A mask that moves with the GT has zero excess flicker; a blinking one has positive."""
    s = SegmentationScorer(NAMES)
    for t in range(4):
        gt = np.zeros((10, 10), np.uint8)
        gt[2:6, t:t + 4] = 1
        s.update(gt.copy(), gt, 'moving')
        blink = gt.copy() if t % 2 == 0 else np.zeros_like(gt)
        s.update(blink, gt, 'blinking')
    seq = s.summary()['per_sequence']
    # Each step moves a 4x4 square one pixel: 8 of 100 pixels change.
    assert seq['moving']['gt_flicker'] == pytest.approx(0.08)
    assert seq['moving']['excess_flicker'] == pytest.approx(0.0)
    assert seq['blinking']['pred_flicker'] == pytest.approx(0.16)
    assert seq['blinking']['excess_flicker'] == pytest.approx(0.08)


def test_ignore_index_and_bad_input() -> None:
    s = SegmentationScorer(['bg', 'tool'], min_gt_pixels=0)
    gt = np.array([[1, 1], [255, 0]], np.uint8)
    pred = np.array([[1, 0], [1, 0]], np.uint8)
    f = s.update(pred, gt)
    # The void pixel is ignored: TP 1, FN 1, FP 0.
    assert f['iou'] == pytest.approx(0.5)
    with pytest.raises(ValueError, match='shape'):
        s.update(np.zeros((2, 3), np.uint8), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match='prediction has class id 5'):
        s.update(np.full((2, 2), 5, np.uint8), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match='ground truth has class id 3'):
        s.update(np.zeros((2, 2), np.uint8), np.full((2, 2), 3, np.uint8))
    with pytest.raises(ValueError, match='at least one class'):
        SegmentationScorer(['bg'])


def test_markdown_and_plot(scored, tmp_path) -> None:
    s, frames = scored
    md = summary_markdown({**s.summary(), 'fps': 12.5}, title='report')
    assert md.startswith('# report')
    assert '| mean Dice (seed paper) | 0.4167 |' in md
    assert '| fps | 12.5000 |' in md
    assert '| s1 | 2 |' in md
    png = plot_per_frame(frames, tmp_path / 'plots' / 'per_frame.png')
    assert png.read_bytes()[:4] == b'\x89PNG'


def test_instrument_class_accuracy_separates_naming_from_finding() -> None:
    # GT: 4 px of a, 4 px of b. Prediction: every instrument pixel found, but 3 of a named b,
    # and one b pixel missed (background), which does not count against the naming.
    gt = _maps(['aaaa', 'bbbb', '....', '....'])
    pr = _maps(['abbb', 'bbb.', '....', '....'])
    s = SegmentationScorer(NAMES, min_gt_pixels=2)
    s.update(pr, gt)
    out = s.summary()
    assert out['instrument_class_accuracy'] == pytest.approx(4 / 7)   # 1 a + 3 b of 7 found
    assert out['binary_dice'] == pytest.approx(2 * 7 / (8 + 7))
    # A binary task has only one instrument class: naming is trivial, so no figure.
    b = SegmentationScorer(['bg', 'tool'], min_gt_pixels=2)
    b.update((gt > 0).astype(np.uint8), (gt > 0).astype(np.uint8))
    assert b.summary()['instrument_class_accuracy'] is None
