"""The two consoles of the CLI: data and tables on stdout, progress and errors on stderr."""

from __future__ import annotations

from rich.console import Console

stdout = Console()
stderr = Console(stderr=True)
