"""Can one frame tell the instrument types apart from their jaws? (a probe of the memory ablation)

    python -m experiments.memory_ablation.jaw_probe --train runs/probe/train_s9001 \
        --test runs/probe/test_s9002 [--patch 32] [--epochs 20] [--json OUT]

The type networks of the ablation name the three look-alike robotic types at chance on new
video. This asks whether the generated frames hold the answer at all: a small classifier is
trained on image patches centred on each instrument's jaws (the ground-truth clasper pixels of
one instrument, `masks/parts` == clasper inside one connected region of `masks/type`), labelled
with its type, and tested on patches of other generated scenes. If it names them well, the
generated jaws are readable in one frame and the segmentation networks fail to learn them; if it
is near chance, the generator makes the types unreadable at this size and no memory has a right
answer to carry.

Patches whose instrument shows fewer than `--min-clasper` clasper pixels (tip hidden or outside
the view) are left out. Train and test come from different generator seeds, so no scene is shared.

`--arch mobilenet_v2` trains torchvision's MobileNetV2 (DMNet's encoder) on the patches instead
(standardised as DMNet standardises its input) and `--save-encoder FILE.safetensors` writes its
weights in torchvision's format, which `model.encoder.weights` reads: an encoder that was taught
the jaws on generated video before the segmentation training starts.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]

CLASPER = 3     # masks/parts: 1 shaft, 2 wrist, 3 clasper


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--train', type=Path, nargs='+', required=True, help='generated data set(s)')
    ap.add_argument('--test', type=Path, nargs='+', required=True, help='generated data set(s)')
    ap.add_argument('--train-split', default=None,
                    help='only this split of the training set(s) (dataset.yaml); default: all')
    ap.add_argument('--patch', type=int, default=32, help='patch side in pixels')
    ap.add_argument('--min-clasper', type=int, default=6)
    ap.add_argument('--epochs', type=int, default=20)
    ap.add_argument('--max-train', type=int, default=0, help='keep at most N training patches')
    ap.add_argument('--arch', choices=('small', 'mobilenet_v2'), default='small')
    ap.add_argument('--lr', type=float, default=2e-3)
    ap.add_argument('--save-encoder', type=Path, default=None,
                    help='mobilenet_v2 only: write its state dict (torchvision keys) here')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--json', type=Path, default=None)
    return ap.parse_args(argv)


def sequences(root: Path, split: str | None) -> list[Path]:
    """The sequence folders of `split` (every one when None)."""
    if not root.is_dir():
        raise SystemExit(f'jaw_probe: no data set at {root}')
    from dmnet_core.data.layout import list_sequences
    try:
        return [s.path for s in list_sequences(root, split)]
    except (KeyError, FileNotFoundError, ValueError) as e:
        raise SystemExit(f'jaw_probe: {e}') from None


def patches(root: Path, side: int, min_clasper: int,
            split: str | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N, side, side, 3) uint8 patches, (N,) type ids, per-patch sequence names."""
    from dmnet_core.data.layout import read_image, read_mask
    xs, ys, seqs = [], [], []
    half = side // 2
    for seq in sequences(root, split):
        for img_path in sorted((seq / 'images').glob('*.png')):
            try:        # RGB image, type and parts masks (a missing or bad file is named)
                img = read_image(img_path)
                types = read_mask(seq / 'masks' / 'type' / img_path.name)
                parts = read_mask(seq / 'masks' / 'parts' / img_path.name)
            except (FileNotFoundError, ValueError) as e:
                raise SystemExit(f'jaw_probe: {e}') from None
            padded = cv2.copyMakeBorder(img, half, half, half, half, cv2.BORDER_REFLECT)
            for t in np.unique(types):
                if t == 0:
                    continue
                n, comp = cv2.connectedComponents((types == t).astype(np.uint8))
                for c in range(1, n):
                    ys_, xs_ = np.nonzero((comp == c) & (parts == CLASPER))
                    if len(ys_) < min_clasper:
                        continue
                    cy, cx = int(round(ys_.mean())), int(round(xs_.mean()))
                    xs.append(padded[cy:cy + side, cx:cx + side])
                    ys.append(int(t))
                    seqs.append(seq.name)
    if not xs:
        raise SystemExit(f'jaw_probe: no instrument with visible jaws in {root}')
    return np.stack(xs), np.array(ys), seqs


def build_classifier(n_classes: int, arch: str = 'small'):
    import torch.nn as nn
    if arch == 'mobilenet_v2':
        import torchvision
        return torchvision.models.mobilenet_v2(weights=None, num_classes=n_classes)

    def block(i: int, o: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
            nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True))
    return nn.Sequential(block(3, 32), nn.MaxPool2d(2), block(32, 64), nn.MaxPool2d(2),
                         block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(128, n_classes))


def to_tensor(x: np.ndarray):
    """N x S x S x 3 uint8 RGB -> N x 3 x S x S, standardised as DMNet's input (default
    ModelConfig mean / std)."""
    from dmnet_core.config import ModelConfig
    from dmnet_core.model import normalize
    return normalize(x, ModelConfig()).contiguous()


def accuracy(model, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    import torch
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(to_tensor(x[i:i + 512])).argmax(1)
                          for i in range(0, len(x), 512)]).numpy()
    return float((pred == y).mean()), pred


def main(argv: list[str] | None = None) -> dict:
    import torch
    import torch.nn.functional as F
    args = parse_args(argv)
    if args.save_encoder and args.arch != 'mobilenet_v2':
        raise SystemExit('jaw_probe: --save-encoder needs --arch mobilenet_v2')
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    def load(roots: list[Path], split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        got = [patches(r, args.patch, args.min_clasper, split)[:2] for r in roots]
        return np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got])

    xtr, ytr = load(args.train, args.train_split)
    xte, yte = load(args.test)
    if args.max_train and len(xtr) > args.max_train:
        keep = rng.choice(len(xtr), args.max_train, replace=False)
        xtr, ytr = xtr[keep], ytr[keep]
    classes = sorted(set(ytr.tolist()) | set(yte.tolist()))
    idx = {c: i for i, c in enumerate(classes)}
    ytr_i = np.array([idx[c] for c in ytr])
    yte_i = np.array([idx[c] for c in yte])
    model = build_classifier(len(classes), args.arch)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * ((len(xtr) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(xtr))
        for i in range(0, len(order), 64):
            b = order[i:i + 64]
            x = to_tensor(xtr[b])
            # Rotations and flips: a jaw's shape, not its direction, names the type.
            k = int(rng.integers(4))
            x = torch.rot90(x, k, (2, 3))
            if rng.random() < 0.5:
                x = x.flip(3)
            loss = F.cross_entropy(model(x), torch.from_numpy(ytr_i[b]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if epoch % 5 == 4 or epoch == args.epochs - 1:
            print(f'epoch {epoch + 1}: loss {loss.item():.3f}, test accuracy '
                  f'{accuracy(model, xte, yte_i)[0]:.3f}', flush=True)
    train_acc, _ = accuracy(model, xtr, ytr_i)
    test_acc, pred = accuracy(model, xte, yte_i)
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    np.add.at(confusion, (yte_i, pred), 1)
    counts = np.bincount(yte_i, minlength=len(classes))
    result = {
        'train': [str(p) for p in args.train], 'train_split': args.train_split,
        'test': [str(p) for p in args.test], 'arch': args.arch, 'patch': args.patch,
        'min_clasper': args.min_clasper, 'epochs': args.epochs,
        'classes': [int(c) for c in classes],
        'n_train': int(len(xtr)), 'n_test': int(len(xte)),
        'train_accuracy': round(train_acc, 4), 'test_accuracy': round(test_acc, 4),
        'chance': round(float(counts.max() / counts.sum()), 4),
        'confusion_test': confusion.tolist(),
        'wall_seconds': round(time.time() - t0, 1),
    }
    if args.save_encoder:
        from safetensors.torch import save_file
        args.save_encoder.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(args.save_encoder))
        result['encoder'] = str(args.save_encoder)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + '\n')
    return result


if __name__ == '__main__':
    main()
