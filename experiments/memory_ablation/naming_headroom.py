"""How much could a memory add to naming the instrument type? (a probe of the memory ablation)

    python -m experiments.memory_ablation.naming_headroom --models runs/ablation/models \
        --data runs/ablation/test_seed7922 [more sets] [--variants single_frame dmnet] [--json OUT]

The type networks find the instruments far better than they name them (binary Dice ~0.75,
~40 % of the found instrument pixels given the right type), so what a memory can carry forward
is bounded by how often the frames it remembers were named right. For each model, on the found
instrument pixels (ground truth an instrument, prediction an instrument) of a held-out split:

- ``frame``: the share named right frame by frame (``instrument_class_accuracy``);
- ``causal_vote``: each frame's pixels of ground-truth type c relabelled with the type most
  often predicted for c so far in the sequence (this frame included): a perfect memory that
  knows which instrument is which and votes over everything it has seen;
- ``sequence_vote``: the same vote over the whole sequence, past and future;
- ``by_part``: ``frame`` on the found pixels of each part (``masks/parts``: shaft, wrist,
  clasper), when the set has parts masks: the three types differ by their jaws only, so this
  says whether a network reads the jaws and fails to carry the type up the shaft, or does not
  read them at all.

The votes group pixels by their ground-truth type, an oracle no model has: they bound the gain
of temporal integration from above. If the votes are not far above ``frame``, a network's
mistakes about an instrument persist from frame to frame and no memory can mend them; if they
are, the single frames hold the answer often enough and the memory does not use it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from experiments.memory_ablation.train_ablation import FOUR, VARIANTS, model_path

REPO = Path(__file__).resolve().parents[2]

PARTS = ('shaft', 'wrist', 'clasper')       # masks/parts values 1, 2, 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--models', type=Path, required=True, help='folder with <variant>.safetensors')
    ap.add_argument('--data', type=Path, nargs='+', required=True,
                    help='held-out datasets (type masks); several give their mean too')
    ap.add_argument('--split', default='test')
    ap.add_argument('--variants', nargs='+', default=list(FOUR), choices=list(VARIANTS))
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--json', type=Path, default=None)
    return ap.parse_args(argv)


def found_confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """C x C counts over pixels whose ground truth and prediction are both an instrument
    (class > 0); rows ground truth, columns prediction; row and column 0 stay empty."""
    from dmnet_core.metrics import confusion
    conf = confusion(pred, gt, num_classes)
    conf[0, :] = 0          # background in the ground truth: nothing to name
    conf[:, 0] = 0          # predicted background: not found
    return conf


def vote_correct(conf_now: np.ndarray, votes: np.ndarray) -> int:
    """Pixels of `conf_now` named right when every ground-truth type c is relabelled with the
    type that `votes` (C x C counts) predicts most often for c."""
    correct = 0
    for c in range(1, conf_now.shape[0]):
        n = int(conf_now[c].sum())
        if n and int(np.argmax(votes[c, 1:])) + 1 == c:
            correct += n
    return correct


def add_part_counts(pred: np.ndarray, gt: np.ndarray, parts: np.ndarray,
                    ok: np.ndarray, n: np.ndarray) -> None:
    """Add one frame's found pixels (`n`) and those named right (`ok`) by part id, in place."""
    found = (gt > 0) & (pred > 0)
    np.add.at(n, parts[found], 1)
    np.add.at(ok, parts[found & (pred == gt)], 1)


def headroom(frame_confs: list[list[np.ndarray]]) -> dict:
    """Accuracies (0-1) from per-sequence lists of per-frame found-pixel confusion matrices."""
    total = frame_ok = causal_ok = seq_ok = 0
    pooled = None
    for confs in frame_confs:
        if not confs:
            continue
        whole = np.sum(confs, axis=0)
        so_far = np.zeros_like(whole)
        for conf in confs:
            so_far += conf
            total += int(conf.sum())
            frame_ok += int(np.trace(conf))
            causal_ok += vote_correct(conf, so_far)
        seq_ok += vote_correct(whole, whole)
        pooled = whole if pooled is None else pooled + whole
    if total == 0:
        return {'found_pixels': 0, 'frame': None, 'causal_vote': None, 'sequence_vote': None}
    # Rows ground-truth type, columns predicted type (found pixels; background row/column cut).
    return {'found_pixels': total, 'frame': frame_ok / total, 'causal_vote': causal_ok / total,
            'sequence_vote': seq_ok / total, 'confusion': pooled[1:, 1:].tolist()}


def run_model(path: Path, data: Path, args: argparse.Namespace) -> dict:
    from dmnet_core.data import layout
    from dmnet_core.segmenter import load_segmenter
    seg = load_segmenter(path, args.device, precision='fp32')
    if seg.task != 'type':
        raise SystemExit(f'naming_headroom: {path} is a {seg.task!r} model; naming needs a '
                         'multi-class task (type)')
    c = len(seg.class_names)
    per_seq = []
    part_ok = np.zeros(len(PARTS) + 1, dtype=np.int64)     # found pixels named right, by part
    part_n = np.zeros(len(PARTS) + 1, dtype=np.int64)
    try:
        sequences = layout.list_sequences(data, args.split)
    except KeyError as exc:
        raise SystemExit(f'naming_headroom: {data}: {exc.args[0]}') from None
    for seq in sequences:
        seg.reset()
        confs = []
        for frame in seq.frames():
            gt = layout.read_mask(seq.mask_path(frame, seg.task))
            pred = seg.step(layout.read_image(frame))
            confs.append(found_confusion(pred, gt, c))
            parts_path = seq.mask_path(frame, 'parts')
            if parts_path.is_file():
                add_part_counts(pred, gt, layout.read_mask(parts_path), part_ok, part_n)
        per_seq.append(confs)
    out = headroom(per_seq)
    if part_n[1:].sum():
        out['by_part'] = {name: (float(part_ok[i] / part_n[i]) if part_n[i] else None)
                          for i, name in enumerate(PARTS, start=1)}
        out['by_part_pixels'] = {name: int(part_n[i]) for i, name in enumerate(PARTS, start=1)}
    return out


KEYS = ('frame', 'causal_vote', 'sequence_vote')


def _row(name: str, r: dict) -> str:
    cells = ['' if r.get(k) is None else f'{100 * r[k]:.1f}' for k in KEYS]
    by_part = r.get('by_part') or {}
    cells += ['' if by_part.get(k) is None else f'{100 * by_part[k]:.1f}' for k in PARTS]
    return f"| {name} | {r.get('found_pixels', '')} | " + ' | '.join(cells) + ' |'


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for data in args.data:
        if not (data / 'dataset.yaml').is_file():
            raise SystemExit(f'naming_headroom: no dataset.yaml in {data}')
    for v in args.variants:
        if not model_path(args.models, v).is_file():
            raise SystemExit(f'naming_headroom: no checkpoint {args.models / v}.safetensors')
    print('| model, set | found px | named right, frame by frame | causal vote | sequence vote '
          '| frame: shaft | wrist | clasper |')
    print('|---|---|---|---|---|---|---|---|')
    out: dict = {}
    for v in args.variants:
        sets = {}
        for data in args.data:
            sets[str(data)] = r = run_model(model_path(args.models, v), data, args)
            print(_row(f'{v}, {data.name}', r), flush=True)
        # Mean over sets (each set weighs the same, as in score_ablation's summaries).
        mean = {k: float(np.mean([r[k] for r in sets.values() if r[k] is not None]))
                for k in KEYS if any(r[k] is not None for r in sets.values())}
        parts = [r['by_part'] for r in sets.values() if r.get('by_part')]
        if parts:
            mean['by_part'] = {k: float(np.mean([p[k] for p in parts if p[k] is not None]))
                               for k in PARTS if any(p[k] is not None for p in parts)}
        out[v] = {'sets': sets, 'mean': mean}
        if len(args.data) > 1:
            print(_row(f'**{v}, mean of {len(args.data)}**', mean), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({'models_dir': str(args.models), 'split': args.split,
                                         'models': out}, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
