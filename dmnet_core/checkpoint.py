"""Checkpoints: safetensors weights with the model configuration inside, never a pickle.

Scheme (one file is enough to load):

    NAME.safetensors   the state dict; its header metadata holds
                       'format'      = 'dmnet-checkpoint/1'
                       'model_config' = JSON of `ModelConfig` (authoritative)
                       'extra'       = JSON of caller data (epoch, metrics...), optional
                       'dtype'       = 'float32' or 'float16' (storage only; loads back as float32)
    NAME.yaml          a readable copy of the config, written beside it for people; never read.

Loading builds the model from the config first, then loads the weights, and names every missing or
unexpected key and every shape mismatch (`CheckpointMismatchError`). A PyTorch `.pth`/`.pt` from
elsewhere is read only with `torch.load(weights_only=True)`, needs a config YAML, and can be
converted with `dmnet convert --pth FILE --config YAML --out FILE.safetensors`.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from dmnet_core.config import ExperimentConfig, ModelConfig, from_dict, read_yaml, to_dict
from dmnet_core.model.dmnet import DMNet, build_model
from dmnet_core.model.encoder import load_state_dict_file

log = logging.getLogger(__name__)

FORMAT = 'dmnet-checkpoint/1'
MODELS_DIR = Path(__file__).resolve().parent / 'models'
DEFAULT_CHECKPOINT = MODELS_DIR / 'default.safetensors'
# The models shipped in the package, by task; the binary one is the default.
SHIPPED_CHECKPOINTS = {
    'binary': DEFAULT_CHECKPOINT,
    'parts': MODELS_DIR / 'parts.safetensors',
    'type': MODELS_DIR / 'type.safetensors',
}
# How each shipped model was made, relative to the repository root (recipes/README.md has the
# commands and scores). The stored configs stay as trained, so the link lives here and in the
# readable models/*.yaml beside each checkpoint.
SHIPPED_RECIPES = {
    'binary': 'recipes/binary_real/mixed_mobilenet_v2_phase6.yaml',
    'parts': 'recipes/parts/parts_real.yaml',
    'type': 'recipes/type/type_synth.yaml',
}
TORCH_SUFFIXES = ('.pth', '.pt')


class CheckpointMismatchError(ValueError):
    """The weights do not fit the architecture their configuration describes."""


def shipped_checkpoint(task: str) -> Path:
    """The checkpoint shipped for `task` ('binary', 'parts' or 'type').

    Raises:
        ValueError: an unknown task.
        FileNotFoundError: no model is shipped for the task (names the file and the recipe).
    """
    if task not in SHIPPED_CHECKPOINTS:
        raise ValueError(f'unknown task {task!r}; shipped models are for '
                         f'{list(SHIPPED_CHECKPOINTS)}')
    path = SHIPPED_CHECKPOINTS[task]
    if not path.is_file():
        raise FileNotFoundError(f'no model shipped for task {task!r} (expected {path}); train one '
                                f'with {SHIPPED_RECIPES[task]} or give a checkpoint')
    return path


def save_checkpoint(path: str | Path, model: nn.Module, cfg: ModelConfig,
                    extra: dict[str, Any] | None = None, half: bool = False) -> Path:
    """Write `model`'s weights as safetensors with `cfg` (and `extra`) in the metadata.

    Args:
        path: the `.safetensors` file to write (parents are created).
        model: the network whose `state_dict` is saved.
        cfg: its configuration.
        extra: JSON-serialisable caller data (epoch, metrics, ...).
        half: store floating tensors as float16 (half the size; loaded back as float32).

    Returns:
        The path written.
    """
    from safetensors.torch import save_file
    path = Path(path)
    if path.suffix != '.safetensors':
        raise ValueError(f'checkpoint path must end in .safetensors: {path}')
    cfg.validate()
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        state[key] = tensor.contiguous().clone()
    try:
        extra_json = json.dumps(extra or {})
    except TypeError as exc:
        raise ValueError(f'checkpoint extra data is not JSON-serialisable: {exc}') from exc
    metadata = {'format': FORMAT, 'model_config': json.dumps(to_dict(cfg)), 'extra': extra_json,
                'dtype': 'float16' if half else 'float32'}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)
    # A readable copy for people; loading never reads it.
    path.with_suffix('.yaml').write_text(
        f'# Configuration stored inside {path.name} (this copy is informational).\n'
        + yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def _config_from(config: ModelConfig | str | Path) -> ModelConfig:
    """A ModelConfig from an object or a YAML file (a ModelConfig or an ExperimentConfig)."""
    if isinstance(config, ModelConfig):
        return config
    path = Path(config)
    data = read_yaml(path)
    try:
        if isinstance(data, dict) and 'model' in data:
            return from_dict(ExperimentConfig, data).model
        return from_dict(ModelConfig, data)
    except ValueError as exc:
        raise ValueError(f'{path}: {exc}') from exc


def load_checkpoint(path: str | Path, config: ModelConfig | str | Path | None = None
                    ) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint without building anything.

    Args:
        path: a `.safetensors` checkpoint, or a `.pth`/`.pt` weights file (then `config` is needed).
        config: a ModelConfig or YAML path; overrides the stored config of a safetensors file.

    Returns:
        (config, state dict with float tensors as float32, extra).

    Raises:
        FileNotFoundError: the file is missing (names it).
        ValueError: the file is corrupt, a refused pickle, or has no configuration.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint not found: {path}')
    if path.suffix in TORCH_SUFFIXES:
        if config is None:
            raise ValueError(f'{path}: a {path.suffix} file carries no dmnet configuration; '
                             'give the model config YAML (dmnet convert --pth FILE --config YAML)')
        state = load_state_dict_file(path)
        cfg, extra = _config_from(config), {'converted_from': path.name}
    else:
        cfg, state, extra = _load_safetensors(path)
        if config is not None:
            cfg = _config_from(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return cfg, state, extra


def _load_safetensors(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework='pt', device='cpu') as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f'{path}: corrupt or not a safetensors checkpoint: {exc}') from exc
    if 'model_config' not in metadata:
        raise ValueError(f'{path}: no dmnet model_config in the safetensors metadata '
                         '(not written by save_checkpoint)')
    try:
        cfg = from_dict(ModelConfig, json.loads(metadata['model_config']))
        extra = json.loads(metadata.get('extra', '{}'))
    except (json.JSONDecodeError, ValueError) as exc:
        raise ValueError(f'{path}: invalid model_config in metadata: {exc}') from exc
    return cfg, state, extra


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], cfg: ModelConfig,
                     source: str = 'checkpoint') -> None:
    """Raise `CheckpointMismatchError` naming what in `state` does not fit `model`."""
    expected = model.state_dict()
    problems = []
    head = 'decoder.head.weight'
    if head in state and state[head].shape[0] != cfg.num_classes:
        problems.append(f'class count: weights have {state[head].shape[0]} classes, the config '
                        f'has {cfg.num_classes} ({cfg.class_names})')
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}'
              for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing:
        problems.append(f'missing keys ({len(missing)}): {_clip(missing)}')
    if unexpected:
        problems.append(f'unexpected keys ({len(unexpected)}): {_clip(unexpected)}')
    if shapes:
        problems.append(f'shape mismatches ({len(shapes)}): {_clip(shapes)}')
    if problems:
        raise CheckpointMismatchError(f'{source} does not fit the model config '
                                      f'(encoder {cfg.encoder.name}, task {cfg.task}): '
                                      + '; '.join(problems))


def _clip(items: list[str], n: int = 10) -> str:
    more = f' ... and {len(items) - n} more' if len(items) > n else ''
    return ', '.join(items[:n]) + more


def build_from_checkpoint(path: str | Path, config: ModelConfig | str | Path | None = None
                          ) -> tuple[DMNet, ModelConfig]:
    """Build the model from the checkpoint's config, then load and validate its weights.

    Args:
        path: `.safetensors` checkpoint, or `.pth`/`.pt` with `config`.
        config: optional ModelConfig / YAML path overriding the stored config.

    Returns:
        (model in eval mode on the CPU, its config).
    """
    cfg, state, _ = load_checkpoint(path, config)
    try:
        model = build_model(cfg, pretrained=False)
    except ValueError as exc:
        raise ValueError(f'{path}: invalid model config: {exc}') from exc
    check_state_dict(model, state, cfg, source=str(path))
    model.load_state_dict(state, strict=True)
    return model.eval(), cfg


# ---------------------------------------------------------------- `dmnet convert`

def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `dmnet convert`: a weights-only .pth/.pt plus a config YAML -> a dmnet checkpoint."""
    p = subparsers.add_parser(
        'convert', help='convert a weights-only PyTorch .pth/.pt to a dmnet safetensors checkpoint',
        description='Read FILE with torch.load(weights_only=True) (no pickled code runs), check it '
                    'against the model config, and write safetensors with the config inside.')
    p.add_argument('--pth', required=True, help='input .pth/.pt state dict')
    p.add_argument('--config', required=True, help='model (or experiment) config YAML')
    p.add_argument('--out', required=True, help='output .safetensors file')
    p.add_argument('--half', action='store_true', help='store weights as float16')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    src = Path(args.pth)
    if src.suffix not in TORCH_SUFFIXES:
        raise ValueError(f'--pth expects a .pth or .pt file, got {src}')
    model, cfg = build_from_checkpoint(src, args.config)
    out = save_checkpoint(args.out, model, cfg, extra={'converted_from': src.name}, half=args.half)
    log.info('wrote %s (%d tensors, config inside)', out, len(model.state_dict()))
    return 0
