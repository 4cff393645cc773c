"""Generated surgical video: abdominal tissue, robotic and laparoscopic instruments, masks.

It exists to train and test the whole pipeline without the real datasets; it is not a claim
about real surgery. A sequence is 'robotic' (wristed instruments, full frame or the black side
bars of raw robotic video) or 'laparoscopic' (a round scope view in a black surround, thin rigid
instruments: grasper, hook, clip applier, scissors, suction tube); 'mixed' draws one per
sequence. Tissue (`tissue`), instruments (`instruments`), field of view (`fov`), the camera's
path (`camera`), light and camera effects (`optics`) and per-frame condition tags
(`conditions`) are separate modules; `scene` puts them together and `dataset` writes the dmnet
layout (`dmnet synth`).

Hard cases on purpose, so that temporal memory has something to win on: specular flashes,
smoke (including short dense bursts), lens fogging, short occlusions of an instrument's tip by
a tissue fold, sudden fast moves of instruments and camera, and look-alike instruments (same
colours, only the tip shape differs). Everything is drawn with numpy/OpenCV from one seeded
generator, so a seed gives byte-identical files.
"""
from dmnet_core.data.synth.conditions import (
    CONDITIONS,
    CONDITIONS_FILE,
    read_conditions,
    write_conditions,
)
from dmnet_core.data.synth.dataset import generate_dataset, register, run
from dmnet_core.data.synth.fov import Fov, draw_fov
from dmnet_core.data.synth.instruments import (
    CLASPER,
    LAP_TYPES,
    LOOKS,
    ROBOTIC_TYPES,
    SHAFT,
    WRIST,
    Instrument,
    Look,
)
from dmnet_core.data.synth.scene import (
    FLAT_BACKGROUND,
    STYLES,
    Scene,
    generate_sequence,
    make_scene,
    render_frame,
    render_frame_tagged,
)

__all__ = [
    'CLASPER', 'CONDITIONS', 'CONDITIONS_FILE', 'FLAT_BACKGROUND', 'LAP_TYPES', 'LOOKS',
    'ROBOTIC_TYPES', 'SHAFT', 'STYLES', 'WRIST', 'Fov', 'Instrument', 'Look', 'Scene',
    'draw_fov', 'generate_dataset', 'generate_sequence', 'make_scene', 'read_conditions',
    'register', 'render_frame', 'render_frame_tagged', 'run', 'write_conditions',
]
