"""Per-frame condition tags of generated sequences: where temporal memory should help.

Each sequence folder gets `conditions.json`:

    {"names": ["smoke_burst", "tip_occluded", "fast_move", "specular_flash",
               "instrument_entering"],
     "frames": {"<frame stem>": [tags...], ...}}

Every frame is listed; [] means a clean frame. A tag is true of the rendered frame:
- smoke_burst: smoke density >= 0.5 (most of the view veiled);
- tip_occluded: a tissue fold hides at least 30 % of an instrument tip's visible pixels;
- fast_move: a visible instrument tip or the camera moves more than 4 s px per frame;
- specular_flash: a specular glint inside the view;
- instrument_entering: an instrument on its way in, its tip already in the view.
"""
from __future__ import annotations

import json
from pathlib import Path

CONDITIONS = ('smoke_burst', 'tip_occluded', 'fast_move', 'specular_flash',
              'instrument_entering')
CONDITIONS_FILE = 'conditions.json'


def write_conditions(seq_path: str | Path, frames: dict[str, list[str]]) -> Path:
    """Write `seq_path/conditions.json` for frames {stem: tags}; returns the file."""
    for stem, tags in frames.items():
        unknown = sorted(set(tags) - set(CONDITIONS))
        if unknown:
            raise ValueError(f'frame {stem}: unknown condition(s) {unknown}; '
                             f'known: {list(CONDITIONS)}')
    path = Path(seq_path) / CONDITIONS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({'names': list(CONDITIONS), 'frames': frames}, indent=1))
    return path


def read_conditions(seq_path: str | Path) -> dict[str, list[str]] | None:
    """Frame stem -> condition tags of a sequence folder; None when it has no conditions.json.

    A malformed file raises ValueError naming it.
    """
    path = Path(seq_path) / CONDITIONS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f'{path}: not valid JSON: {exc}') from exc
    if not isinstance(data, dict) or not isinstance(data.get('frames'), dict) \
            or not isinstance(data.get('names'), list):
        raise ValueError(f'{path}: expected {{"names": [...], "frames": {{stem: [tags]}}}}')
    names = set(data['names'])
    out: dict[str, list[str]] = {}
    for stem, tags in data['frames'].items():
        if not isinstance(tags, list) or not set(tags) <= names:
            raise ValueError(f'{path}: frame {stem}: tags {tags!r} not a list of {sorted(names)}')
        out[str(stem)] = [str(t) for t in tags]
    return out
