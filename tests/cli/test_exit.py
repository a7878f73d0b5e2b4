"""The console script ends its process itself: exit handlers run, output arrives, codes hold."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from simclr_cli import __version__
from simclr_cli.cli._exit import exit_code_of

ROOT = Path(__file__).resolve().parents[2]


def _console_script(arguments: list[str], marker: Path) -> subprocess.CompletedProcess[str]:
    """Run ``main()`` as the console script does, with an exit handler that writes ``marker``."""
    program = textwrap.dedent(
        f"""
        import atexit, pathlib, sys
        atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text("ran"))
        sys.argv = ["simclr", *{arguments!r}]
        from simclr_cli.cli.app import main
        main()
        """
    )
    return subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_main__output_is_flushed_and_exit_handlers_run(tmp_path):
    marker = tmp_path / "marker"
    finished = _console_script(["--version"], marker)
    # Standard output is a pipe here (block-buffered): it arrives only if flushed before exit.
    assert finished.returncode == 0
    assert finished.stdout.strip() == f"simclr {__version__}"
    assert marker.read_text() == "ran"


def test_main__usage_and_input_errors_keep_their_codes(tmp_path):
    usage = _console_script(["no-such-command"], tmp_path / "usage")
    assert usage.returncode == 2
    missing = _console_script(["info", str(tmp_path / "missing.safetensors")], tmp_path / "input")
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr
    assert (tmp_path / "input").read_text() == "ran"


@pytest.mark.parametrize(("code", "expected"), [(None, 0), (0, 0), (3, 3), ("bad input", 1)])
def test_exit_code_of__maps_every_kind_of_code(code, expected, capsys):
    assert exit_code_of(SystemExit(code)) == expected
    if isinstance(code, str):
        assert capsys.readouterr().err.strip() == code
