"""Several training draws of the memory ablation, side by side: mean, spread and the issue's bars.

    python -m experiments.memory_ablation.summarize_draws run1=a_7919.json run1=a_7920.json \
        run2=b_7919.json ... [--json OUT.json] [--md OUT.md]

Each input is a `score_ablation.py --json` file (one training draw of the four variants, scored
on one held-out set); `label=` is optional (default: the file's stem), and files sharing a label
are one draw scored on several held-out sets (its mIoU is their mean). Per draw: each variant's
mIoU and its gain over that draw's single-frame network. Over the draws: mean, sample standard
deviation and minimum of each gain, per-condition mean gains, and how many draws meet the bars
of the ablation (DMNet >= +3 mIoU points, local only and global only >= +1 each). One draw's gain
mixes the effect of the memory with training noise; the mean over draws is what says whether a
memory earns its place, the spread says how far one draw can be trusted.

Over every file, each held-out set weighing the same, a table like the paper's: per model mIoU,
mDice, challenge IoU/Dice, flicker on the generated video, the gain over each set's own
single-frame network (mean, standard error, sets at or over the bar), ms per frame and the cost
relative to the backbone. `--alias dmnet_lp=dmnet` reads files that scored the same weights under
a variant's name.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

# The ablation's bars, set before any scoring: mIoU points over the single-frame network.
BARS = {'local_only': 1.0, 'global_only': 1.0, 'dmnet': 3.0}
# The further variants answer to the bar of the model they extend.
EXTRA_BARS = {'local_only_lp': 1.0, 'global_only_lp': 1.0, 'dmnet_lp': 3.0,
              'local_only_lp_clip9': 1.0}
LABELS = {'dmnet': 'DMNet'}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('draws', nargs='+', help='[label=]score_ablation JSON, one per training draw')
    ap.add_argument('--json', type=Path, help='write the summary here')
    ap.add_argument('--md', type=Path, help='write the markdown tables here')
    ap.add_argument('--variants', nargs='+', default=list(BARS),
                    choices=[*BARS, *EXTRA_BARS],
                    help="models compared with single_frame (default: the paper's three)")
    ap.add_argument('--alias', nargs='+', default=[], metavar='SCORED=AS',
                    help='read the scores of model SCORED as those of AS (replacing any AS) in '
                         'every file that has SCORED (files that scored the same weights '
                         'under a variant name, e.g. dmnet_lp=dmnet)')
    return ap.parse_args(argv)


def load_draw(spec: str, compared: tuple[str, ...] = tuple(BARS),
              aliases: dict[str, str] | None = None) -> tuple[str, dict]:
    label, sep, path = spec.partition('=')
    path = Path(path if sep else spec)
    if not sep:
        label = path.stem
    try:
        res = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f'summarize_draws: cannot read {path}: {e}') from None
    for scored, as_name in (aliases or {}).items():
        if scored in res.get('models', {}):
            res['models'][as_name] = res['models'].pop(scored)
            if scored in res.get('timing_ms', {}):
                res['timing_ms'][as_name] = res['timing_ms'].pop(scored)
    missing = [v for v in ('single_frame', *compared) if v not in res.get('models', {})]
    if missing:
        raise SystemExit(f'summarize_draws: {path} has no scores for {", ".join(missing)}')
    return label, res


def _stats(values: list[float]) -> dict:
    sd = statistics.stdev(values) if len(values) > 1 else None
    return {'mean': statistics.fmean(values), 'sd': sd, 'min': min(values), 'max': max(values)}


def summarize(draws: list[tuple[str, dict]], compared: tuple[str, ...] = tuple(BARS)) -> dict:
    """mIoU and gains in points (x100), per draw and over draws, of `compared` vs single_frame.

    Files with the same label are one draw scored on several held-out sets: the draw's mIoU
    is their mean.
    """
    bars = {**BARS, **EXTRA_BARS}
    bars = {v: bars[v] for v in compared}
    models = ('single_frame', *compared)
    groups: dict[str, list[dict]] = {}
    for label, res in draws:
        groups.setdefault(label, []).append(res)
    per_draw = []
    for label, scored in groups.items():
        m = {v: statistics.fmean(100 * r['models'][v]['mean_iou'] for r in scored)
             for v in models}
        per_draw.append({'label': label,
                         'scored_on': sorted({str(r.get('machine')) for r in scored}),
                         'test_seeds': [r.get('test_data', {}).get('seed') for r in scored],
                         'miou': m, 'gain': {v: m[v] - m['single_frame'] for v in bars}})
    gains = {v: _stats([d['gain'][v] for d in per_draw]) for v in bars}
    for v, bar in bars.items():
        gains[v]['bar'] = bar
        gains[v]['draws_meeting_bar'] = sum(d['gain'][v] >= bar for d in per_draw)
        gains[v]['mean_meets_bar'] = gains[v]['mean'] >= bar
    conditions = sorted({c for _, res in draws for c in
                         res['models']['single_frame'].get('per_condition_miou', {})})
    cond_gain = {}
    for c in conditions:
        # A condition with no scored class on a set (a few frames under the GT-pixel rule) is
        # None there: that set is left out of the condition's mean.
        cells = [res['models'] for _, res in draws
                 if all(res['models'][v].get('per_condition_miou', {}).get(c) is not None
                        for v in models)]
        if cells:
            cond_gain[c] = {v: statistics.fmean(
                100 * (ms[v]['per_condition_miou'][c] - ms['single_frame']['per_condition_miou'][c])
                for ms in cells) for v in bars}
    return {'draws': per_draw, 'miou': {v: _stats([d['miou'][v] for d in per_draw])
                                        for v in models},
            'gain': gains, 'per_condition_mean_gain': cond_gain, 'compared': list(compared),
            'finding_naming': finding_and_naming([res for _, res in draws], models),
            'per_set': per_set_table([res for _, res in draws], models, bars)}


def mean_present(vals: list) -> float | None:
    """Mean of the values that are not None; None when there are none (a field older files lack)."""
    vals = [v for v in vals if v is not None]
    return statistics.fmean(vals) if vals else None


def per_set_table(scored: list[dict], models: tuple[str, ...], bars: dict) -> dict:
    """The paper-like table over every scored file, each held-out set weighing the same.

    Per model, means over the files (x100) of mIoU, mDice, challenge IoU/Dice and flicker on the
    generated video; the gain over each file's own single-frame network (mean, standard error,
    sets at or over the bar); ms per frame and the cost relative to the backbone (each file's
    round-robin ratio: mean and max); parameters. Fields a file lacks are left out of that mean.
    """
    out = {}
    for v in models:
        rows = [r['models'][v] for r in scored]
        gains = [100 * (r['models'][v]['mean_iou'] - r['models']['single_frame']['mean_iou'])
                 for r in scored]
        ratios = [r['timing_ms'][v] / r['timing_ms']['single_frame'] for r in scored
                  if r.get('timing_ms', {}).get(v) and r['timing_ms'].get('single_frame')]
        out[v] = {'sets': len(rows),
                  **{k: mean_present([None if m.get(k) is None else 100 * m[k] for m in rows])
                     for k in ('mean_iou', 'mean_dice', 'challenge_iou', 'challenge_dice')},
                  'pred_flicker': mean_present([m.get('pred_flicker') for m in rows]),
                  'gain': statistics.fmean(gains),
                  'gain_se': (statistics.stdev(gains) / len(gains) ** 0.5
                              if len(gains) > 1 else None),
                  'sets_meeting_bar': (sum(g >= bars[v] for g in gains) if v in bars else None),
                  'ms': mean_present([r.get('timing_ms', {}).get(v) for r in scored]),
                  'x_backbone': mean_present(ratios), 'x_backbone_max': max(ratios, default=None),
                  'params': rows[0].get('params'),
                  'local': rows[0].get('local'), 'global': rows[0].get('global')}
    return out


def finding_and_naming(scored: list[dict], models: tuple[str, ...]) -> dict:
    """Per model, means over every scored file (x100) of binary Dice (finding the instruments)
    and instrument class accuracy (naming the ones found), overall, on clean frames and on
    tip_occluded frames (jaws hidden: if naming is no worse there, the jaws were not read).

    Files scored before the class accuracy existed are left out; {} when none has it.
    """
    have = [r['models'] for r in scored
            if all(r['models'][v].get('instrument_class_accuracy') is not None for v in models)]
    if not have:
        return {}

    def by_condition(v: str, cond: str) -> float | None:
        vals = [m[v].get('per_condition_class_accuracy', {}).get(cond) for m in have]
        return mean_present([None if x is None else 100 * x for x in vals])

    out = {}
    for v in models:
        out[v] = {'files': len(have),
                  'binary_dice': statistics.fmean(100 * m[v]['binary_dice'] for m in have),
                  'class_accuracy': statistics.fmean(
                      100 * m[v]['instrument_class_accuracy'] for m in have),
                  'class_accuracy_clean': by_condition(v, 'clean'),
                  'class_accuracy_tip_occluded': by_condition(v, 'tip_occluded')}
    return out


def _pm(s: dict) -> str:
    return f"{s['mean']:+.2f} ± {s['sd']:.2f}" if s['sd'] is not None else f"{s['mean']:+.2f}"


def to_markdown(summary: dict) -> str:
    n = len(summary['draws'])
    compared = summary.get('compared', list(BARS))
    names = [LABELS.get(v, v) for v in compared]
    lines = ['| draw | held-out seeds | single_frame | ' + ' | '.join(names) + ' |',
             '|---|---|---|' + '---|' * len(compared)]
    for d in summary['draws']:
        cells = [f"{d['miou']['single_frame']:.2f}"] + [
            f"{d['miou'][v]:.2f} ({d['gain'][v]:+.2f})" for v in compared]
        seeds = ', '.join(str(t) for t in d['test_seeds'] if t is not None)
        lines.append(f"| {d['label']} | {seeds} | "
                     + ' | '.join(cells) + ' |')
    mi, g = summary['miou'], summary['gain']
    lines.append(f'| mean ± sd of {n} | | {mi["single_frame"]["mean"]:.2f} ± '
                 f'{(mi["single_frame"]["sd"] or 0):.2f} | '
                 + ' | '.join(f'{mi[v]["mean"]:.2f} ({_pm(g[v])})' for v in compared) + ' |')
    lines += ['', '| gain over single-frame (mIoU points) | bar | mean ± sd | min | max '
              '| draws at or over the bar |',
              '|---|---|---|---|---|---|']
    for v in compared:
        s = g[v]
        lines.append(f"| {v} | +{s['bar']:g} | {_pm(s)} | {s['min']:+.2f} | {s['max']:+.2f} | "
                     f"{s['draws_meeting_bar']} of {n} |")
    if summary['per_condition_mean_gain']:
        lines += ['', 'Mean gain over single-frame by condition (mIoU points):', '',
                  '| condition | ' + ' | '.join(names) + ' |', '|---|' + '---|' * len(compared)]
        for c, row in summary['per_condition_mean_gain'].items():
            lines.append(f'| {c} | ' + ' | '.join(f'{row[v]:+.2f}' for v in compared) + ' |')
    lines += per_set_markdown(summary)
    fn = summary.get('finding_naming')
    if fn:
        n_files = next(iter(fn.values()))['files']
        lines += ['', f'Finding against naming, mean over {n_files} scored sets (x100): binary '
                  'Dice (any instrument found), and the share of found instrument pixels given '
                  'the right type:', '',
                  '| model | binary Dice | class accuracy | class accuracy, clean | '
                  'class accuracy, tip_occluded |',
                  '|---|---|---|---|---|']
        for v, r in fn.items():
            cells = ['' if r[k] is None else f'{r[k]:.2f}' for k in
                     ('binary_dice', 'class_accuracy', 'class_accuracy_clean',
                      'class_accuracy_tip_occluded')]
            lines.append(f'| {LABELS.get(v, v)} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def per_set_markdown(summary: dict) -> list[str]:
    """The paper-like table of `per_set_table` (every file one held-out set)."""
    table = summary.get('per_set')
    if not table:
        return []
    bars = {v: summary['gain'][v]['bar'] for v in summary['gain']}
    n = next(iter(table.values()))['sets']

    def f(x: float | None, fmt: str) -> str:
        return '' if x is None else format(x, fmt)
    lines = ['', f'Per model, mean over the {n} scored sets, each set weighing the same '
             "(x100 but flicker; Δ: gain over the same set's single-frame network, ± its "
             "standard error over sets; × backbone: mean of the sets' round-robin ratios, "
             'max in brackets):', '',
             '| model | local | global | mIoU | mDice | challenge IoU | challenge Dice | Δ mIoU '
             '| sets at or over the bar | flicker | ms/frame | × backbone | parameters |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for v, r in table.items():
        delta = '' if v == 'single_frame' else f"{r['gain']:+.2f}" + (
            '' if r['gain_se'] is None else f" ± {r['gain_se']:.2f}")
        met = '' if r['sets_meeting_bar'] is None else \
            f"{r['sets_meeting_bar']} of {r['sets']} (+{bars[v]:g})"
        ratio = '' if r['x_backbone'] is None else \
            f"{r['x_backbone']:.2f} ({r['x_backbone_max']:.2f})"
        lines.append(
            f"| {LABELS.get(v, v)} | {'✓' if r['local'] else ''} | {'✓' if r['global'] else ''} "
            f"| {f(r['mean_iou'], '.2f')} | {f(r['mean_dice'], '.2f')} "
            f"| {f(r['challenge_iou'], '.2f')} | {f(r['challenge_dice'], '.2f')} | {delta} "
            f"| {met} | {f(r['pred_flicker'], '.4f')} | {f(r['ms'], '.1f')} | {ratio} "
            f"| {f(r['params'], ',')} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    compared = tuple(args.variants)
    aliases = {}
    for a in args.alias:
        scored, sep, as_name = a.partition('=')
        if not (sep and scored and as_name):
            raise SystemExit(f'summarize_draws: --alias {a!r} is not SCORED=AS')
        aliases[scored] = as_name
    summary = summarize([load_draw(s, compared, aliases) for s in args.draws], compared)
    md = to_markdown(summary)
    print(md)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(md)
    return 0


if __name__ == '__main__':
    sys.exit(main())
