"""What if the memories held the right answers? An oracle for label propagation.

    python -m experiments.memory_ablation.oracle_bank --models experiments/memory_ablation \
        --data runs/lpval/data --split val [--variants local_only global_only dmnet] \
        [--label-propagation 2] [--max-frames 20] [--json OUT]

A memory model runs with label propagation (`--label-propagation GAMMA`, default 2), and each
sequence of a split is segmented twice by the Segmenter, causally, as in the node:

- ``own``: the ELM window and the bank keep each frame's own predicted class shares (inference);
- ``truth``: they keep each frame's ground-truth class shares instead (an oracle; the frame's
  own prediction and everything else unchanged).

If ``truth`` is far ahead of ``own``, the reads find the same instrument and the names they find
are what fails; if the two are close, the reads do not carry the type even when the memories
hold the right one, and the fault is in the read (keys, resolution, fusion). Reported per
mode: the dataset mIoU of the instrument types (`dmnet_core.metrics`'s rule) and the share of
found instrument pixels named right. Use generated validation data only.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from experiments.memory_ablation.train_ablation import VARIANTS, model_path

REPO = Path(__file__).resolve().parents[2]

MODES = ('own', 'truth')


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--models', type=Path, required=True, help='folder with <variant>.safetensors')
    ap.add_argument('--data', type=Path, required=True, help='generated dataset (type masks)')
    ap.add_argument('--split', default='val')
    ap.add_argument('--variants', nargs='+', default=['local_only', 'global_only', 'dmnet'],
                    choices=[v for v in VARIANTS if v != 'single_frame'],
                    help='memory models (default: the three of the ablation)')
    ap.add_argument('--label-propagation', type=float, default=2.0, metavar='GAMMA',
                    help="label propagation's weight (model.label_propagation, > 0; default "
                         "2); 'truth' stores each frame's ground-truth class shares for it "
                         'instead of the prediction (ELM window and bank alike)')
    ap.add_argument('--max-frames', type=int, default=0,
                    help='first N frames per sequence (0: all)')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--json', type=Path, default=None)
    return ap.parse_args(argv)


def scores(conf: np.ndarray) -> dict:
    """mIoU over instrument classes present, and the share of found instrument px named right
    (the rules of `SegmentationScorer`'s ``dataset_iou`` and ``instrument_class_accuracy``)."""
    from dmnet_core.metrics import class_accuracy, iou_dice_from_confusion
    iou, _ = iou_dice_from_confusion(conf)
    present = [v for v in iou[1:] if v is not None]
    return {'miou': float(np.mean(present)) if present else None,
            'named_right': class_accuracy(conf)}


def mask_logits(masks: torch.Tensor, num_classes: int, size: tuple[int, int]) -> torch.Tensor:
    """Logits whose softmax is each class's area share of a mask over the cells of `size`.

    B x H x W class ids (ids >= K, e.g. ignored pixels, count as no class) -> B x K x size: what
    `class_shares` makes of a prediction, made from a ground-truth mask instead.
    """
    onehot = F.one_hot(masks.long().clamp(0, num_classes), num_classes + 1)[..., :num_classes]
    area = F.adaptive_avg_pool2d(onehot.permute(0, 3, 1, 2).float(), size)
    return torch.log(area + 1e-6)


def run_mode(seg, sequences: list, mode: str, max_frames: int) -> np.ndarray:
    """Segment every sequence with the memories keeping predictions ('own') or truth; C x C."""
    from dmnet_core import segmenter as segmenter_module
    from dmnet_core.data import layout
    from dmnet_core.metrics import confusion
    from dmnet_core.model.global_memory import class_shares
    from experiments.memory_ablation.memory_diagnostics import shadowed

    c = len(seg.class_names)
    current: dict = {}

    def truth_logits(like: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        mask = torch.from_numpy(current['gt'].astype(np.int64))[None].to(like.device)
        return mask_logits(mask, c, size)

    def shares(logits, size):                     # what label propagation keeps per frame
        return class_shares(truth_logits(logits, size) if mode == 'truth' else logits, size)

    conf = np.zeros((c, c), dtype=np.int64)
    with shadowed(segmenter_module, 'class_shares', shares):
        for seq in sequences:
            seg.reset()
            frames = seq.frames()[:max_frames or None]
            for frame in frames:
                current['gt'] = gt = layout.read_mask(seq.mask_path(frame, seg.task))
                pred = seg.step(layout.read_image(frame))
                conf += confusion(pred, gt, c)
    return conf


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.label_propagation <= 0:
        raise SystemExit('oracle_bank: --label-propagation must be > 0: the oracle swaps what '
                         "label propagation keeps of each frame's prediction")
    from dmnet_core.data import layout
    from dmnet_core.segmenter import load_segmenter
    if not (args.data / 'dataset.yaml').is_file():
        raise SystemExit(f'oracle_bank: no dataset.yaml in {args.data}')
    try:
        sequences = layout.list_sequences(args.data, args.split)
    except KeyError as exc:
        raise SystemExit(f'oracle_bank: {args.data}: {exc.args[0]}') from None
    print('| model | bank holds | mIoU | named right (found px) |')
    print('|---|---|---|---|')
    out: dict = {}
    for v in args.variants:
        path = model_path(args.models, v)
        if not path.is_file():
            raise SystemExit(f'oracle_bank: no checkpoint {path}')
        seg = load_segmenter(path, args.device, precision='fp32',
                             memory={'label_propagation': args.label_propagation})
        out[v] = {}
        for mode in MODES:
            out[v][mode] = r = scores(run_mode(seg, sequences, mode, args.max_frames))
            print(f"| {v} | {mode} | {100 * r['miou']:.2f} | {100 * r['named_right']:.1f} |",
                  flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({'models_dir': str(args.models), 'data': str(args.data),
                                         'split': args.split, 'max_frames': args.max_frames,
                                         'label_propagation': args.label_propagation,
                                         'models': out}, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
