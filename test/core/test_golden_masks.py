"""Golden outputs: each shipped checkpoint's masks on a fixed generated clip never change.

`golden_masks.npz` holds the input frames (a generated sequence, stored so that a change in
the generator does not read as a change in a model) and each shipped model's masks, frame by
frame through one `Segmenter` (so both memories and, for the type model, label propagation are
exercised). A refactor of the model, the checkpoint loader or the config must reproduce them.
Regenerate only when a shipped model is deliberately replaced:

    .venv/bin/python test/core/test_golden_masks.py --write
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).with_name('golden_masks.npz')
SEED, FRAMES, SIZE = 2021, 12, (128, 160)
TASKS = ('binary', 'parts', 'type')
# Masks are bit-identical on the machine that wrote them; another CPU's kernels may flip the
# argmax of a rare pixel on a tie, so allow that many and no more.
MAX_FLIPPED = 2e-4


def generated_frames() -> np.ndarray:
    """FRAMES x H x W x 3 uint8: the clip the golden masks were computed on."""
    from dmnet_core.data.synth import generate_sequence

    rng = np.random.default_rng(np.random.SeedSequence([SEED, 0]))
    return np.stack([rgb for rgb, _ in generate_sequence(rng, FRAMES, SIZE)])


def shipped_masks(task: str, frames: np.ndarray) -> np.ndarray:
    """The shipped `task` model's masks over `frames`, one video, on the CPU in fp32."""
    from dmnet_core.segmenter import load_segmenter

    seg = load_segmenter(task=task, device='cpu', precision='fp32')
    return np.stack([seg.step(frame) for frame in frames])


@pytest.fixture(scope='module')
def golden() -> dict[str, np.ndarray]:
    if not GOLDEN.is_file():
        pytest.fail(f'{GOLDEN} is missing: python {__file__} --write')
    with np.load(GOLDEN) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize('task', TASKS)
def test_shipped_model_reproduces_its_golden_masks(task, golden):
    masks = shipped_masks(task, golden['frames'])
    want = golden[task]
    assert masks.shape == want.shape and masks.dtype == want.dtype
    flipped = float(np.mean(masks != want))
    assert flipped <= MAX_FLIPPED, (
        f'shipped {task} model: {flipped:.4%} of the golden pixels changed')
    # Not a blank or constant answer: the golden clip shows instruments.
    assert len(np.unique(want)) > 1


def main(argv: list[str]) -> int:
    if argv != ['--write']:
        print(f'usage: python {__file__} --write', file=sys.stderr)
        return 2
    frames = generated_frames()
    out = {'frames': frames, **{task: shipped_masks(task, frames) for task in TASKS}}
    np.savez_compressed(GOLDEN, **out)
    print(f'wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
