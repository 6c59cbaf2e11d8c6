"""The runtime's tests pass as on a light install (``pip install .``): TensorFlow, Keras,
PyTorch and JAX unimportable, and no ``../shared/data``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
RUNTIME_TESTS = (
    "test_cli_and_sdk.py",
    "test_preprocess.py",
    "test_examples.py",
    "test_lab_units.py",
    "test_lab_cli.py",
    "test_readme_api.py",
    "test_scale.py",
    "test_review.py",
    "test_cell_on_field.py",
)
"""Test files of the runtime (SDK, classify/info/bench, metadata, examples, the lab
workflow: folders, files, groups, watch, camera; the scale and segmented-cell checks; the
review page and overlays; a cell model on a field)."""


@pytest.mark.slow
def test_runtime_tests_pass_without_tensorflow_or_data(tmp_path):
    blocker = TESTS / "without_tensorflow"  # its sitecustomize.py blocks the imports
    path = [str(blocker), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(path),
        LEUKEDGE_SHARED_DATA=str(tmp_path / "no_data"),
    )
    blocked = subprocess.run(
        [sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, text=True
    )
    assert blocked.returncode != 0 and "blocked" in blocked.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"]
        + [str(TESTS / name) for name in RUNTIME_TESTS],
        env=env,
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) >= 30, proc.stdout[-2000:]
    # Only tests that read the real data may skip, and they say so.
    skips = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    assert all("real data folder" in line for line in skips), skips
    assert len(skips) <= 1, skips
