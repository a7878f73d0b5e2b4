"""The two consoles of the CLI: data and tables on stdout, progress and errors on stderr."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

stdout = Console()
stderr = Console(stderr=True)


def print_error(message: str) -> None:
    """Print one red error line on stderr."""
    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
