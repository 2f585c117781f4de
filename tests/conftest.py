"""Shared test fixtures: where the real benchmark data lives, skipped cleanly when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never contact a model or dataset hub: the machine is offline and tests load only local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Two cores are shared by test processes, Ray actors and sandbox children: one torch thread each avoids
# oversubscription that made generation 15x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RLTF_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real MBPP / HumanEval / APPS files; tests that need it skip when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark data folder {SHARED_DATA} is absent (set RLTF_SHARED_DATA to point at it)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def ray_temp_dir():
    """A short temp dir of its own for a test's Ray cluster (Ray's socket paths must stay under 108 bytes)."""
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="rltf-ray-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)
