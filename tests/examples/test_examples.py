"""Each example runs end to end on tiny data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pretrain_and_search__runs_on_generated_shapes():
    command = [
        sys.executable,
        str(ROOT / "examples" / "pretrain_and_search.py"),
        "--backbone",
        "test_resnet",
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--neighbours",
        "2",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("trained 2 steps")
    assert lines[1].startswith("query: ") and len(lines) == 4
