"""The `dmnet` command: one sub-command per module, each registering its own arguments.

Each module in COMMANDS defines `register(subparsers)`, which adds its parser and sets
`func=run(args) -> int`. argparse lives only here and in those `register` functions.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = {
    'synth': 'dmnet_core.data.synth',
    'preprocess': 'dmnet_core.data.preprocess',
    'train': 'dmnet_core.train',
    'evaluate': 'dmnet_core.evaluate',
    'convert': 'dmnet_core.checkpoint',
}


def parse_size(text: str, minimum: int = 32, multiple: int = 1) -> tuple[int, int]:
    """Argparse type for 'HxW' (e.g. '256x320') -> (256, 320), with an error naming the value."""
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'size must look like HxW (e.g. 256x320), got {text!r}') from None
    if h < minimum or w < minimum:
        raise argparse.ArgumentTypeError(f'size {text!r} must be at least {minimum}x{minimum}')
    if h % multiple or w % multiple:
        raise argparse.ArgumentTypeError(
            f'size {text!r}: H and W must be multiples of {multiple} (the network stride)')
    return h, w


def parse_model_size(text: str) -> tuple[int, int]:
    """Argparse type for an inference size: 'HxW', multiples of 32."""
    return parse_size(text, minimum=32, multiple=32)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='dmnet',
        description='DMNet surgical instrument segmentation: data, training, evaluation')
    parser.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    sub = parser.add_subparsers(dest='command', required=True)
    for module in COMMANDS.values():
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(levelname)s %(name)s: %(message)s')
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        # Bad input: one clear line naming the file or value, no traceback.
        print(f'dmnet {args.command}: error: {exc}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
