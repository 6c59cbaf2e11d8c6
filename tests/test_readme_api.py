"""The README's Python API examples run as written (runtime only: the embedded model and
``examples/images/``), including the live-stream callback on a frame the model rejects."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np

from leukedge.engine.preprocess import load_rgb

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Python API") : text.index("## CLI reference")]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return [b for b in blocks if "picam2" not in b]  # needs a Raspberry Pi camera


def test_readme_python_api_runs_and_the_callback_survives_a_rejected_frame(monkeypatch, capsys):
    blocks = _python_blocks()
    assert len(blocks) == 2
    errors: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    monkeypatch.chdir(ROOT)
    benign = load_rgb(ROOT / "examples" / "images" / "WBC-Benign-420.jpg")
    namespace = {
        "bgr_frame": np.ascontiguousarray(benign[..., ::-1]),
        "rgb_frame": np.full((224, 224, 3), 255, np.uint8),  # blank: rejected, no score
        "timestamp_ms": 0,
    }
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert errors == []
    out = capsys.readouterr().out
    assert "refer uncertain None" in out  # the README's first example, as its comment says
    assert "0 rejected blank" in out  # the live-stream callback's line for the blank frame
