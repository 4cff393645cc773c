"""What if the bank held the right answers? (issue 15, item 5)

    python bench/ablation/oracle_bank.py --models runs/mvgt/models_seed0 --data runs/many/data \
        --split val [--variants dmnet_mv dmnet_mvgt] [--max-frames 20] [--json OUT]
    python bench/ablation/oracle_bank.py --models runs/many/models_seed0 --data runs/lpval/data \
        --split val --variants local_only global_only dmnet --label-propagation 2

For a model whose global memory stores predictions (`model.global_memory.mask_value`), each
sequence of a split is segmented twice by the Segmenter, causally, as in the node:

- ``own``: the bank stores the model's own prediction for every admitted frame (inference);
- ``truth``: the bank stores the admitted frame's ground-truth mask instead (an oracle; the
  frame's own prediction and everything else unchanged).

If ``truth`` is far ahead of ``own``, the read carries what is stored and the stored predictions
are what holds the memory back; if the two are close, the read does not carry the type even
when the bank holds the right one, and the fault is in the read (keys, resolution, fusion).
With `--label-propagation GAMMA` (README item 25) any memory model runs with label
propagation, and ``truth`` makes the ELM window and the bank keep each frame's ground-truth class
shares instead of its prediction's: if that is far ahead of ``own``, the reads find the same
instrument and the names they find are what fails. Reported per mode: the dataset mIoU of the
instrument types (`dmnet_core.metrics`'s rule) and the share of found instrument pixels named
right. Use generated validation data only.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.ablation.train_ablation import VARIANTS  # noqa: E402

MODES = ('own', 'truth')


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--models', type=Path, required=True, help='folder with <variant>.safetensors')
    ap.add_argument('--data', type=Path, required=True, help='generated dataset (type masks)')
    ap.add_argument('--split', default='val')
    ap.add_argument('--variants', nargs='+', default=['dmnet_mv', 'dmnet_mvgt'],
                    choices=[v for v in VARIANTS if v != 'single_frame'],
                    help='models with predictions in the bank, or any memory model with '
                         '--label-propagation')
    ap.add_argument('--label-propagation', type=float, default=None, metavar='GAMMA',
                    help='run with label propagation (model.label_propagation); then '
                         "'truth' stores each frame's ground-truth class shares for it instead "
                         'of the prediction (ELM window and bank alike)')
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


def run_mode(seg, sequences: list, mode: str, max_frames: int) -> np.ndarray:
    """Segment every sequence with the bank holding predictions ('own') or truth; C x C counts."""
    import torch

    from dmnet_core import segmenter as segmenter_module
    from dmnet_core.data import layout
    from dmnet_core.memory_diagnostics import shadowed
    from dmnet_core.metrics import confusion
    from dmnet_core.model.global_memory import class_shares, mask_logits

    model = seg.model
    c = len(seg.class_names)
    current: dict = {}
    original = type(model).global_key_value.__get__(model)

    def truth_logits(like: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        mask = torch.from_numpy(current['gt'].astype(np.int64))[None].to(like.device)
        return mask_logits(mask, c, size)

    def key_value(f32, logits=None):
        if logits is not None and mode == 'truth':
            logits = truth_logits(f32, logits.shape[-2:])
        return original(f32, logits)

    def shares(logits, size):                     # what label propagation keeps per frame
        return class_shares(truth_logits(logits, size) if mode == 'truth' else logits, size)

    conf = np.zeros((c, c), dtype=np.int64)
    with shadowed(model, 'global_key_value', key_value), \
            shadowed(segmenter_module, 'class_shares', shares):
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
        path = args.models / f'{v}.safetensors'
        if not path.is_file():
            raise SystemExit(f'oracle_bank: no checkpoint {path}')
        lp = args.label_propagation
        seg = load_segmenter(path, args.device, precision='fp32',
                             memory=None if lp is None else {'label_propagation': lp})
        if not (seg.model.global_mask_value or seg.label_propagation):
            raise SystemExit(f'oracle_bank: {path} stores no predictions in its bank '
                             '(model.global_memory.mask_value is off); give '
                             '--label-propagation to test what its reads carry')
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
