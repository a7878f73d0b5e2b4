"""Turning core errors into one red line and an exit code, at the edge of the program."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.markup import escape

from ..core import _env
from ..core.errors import ConfigError, SimCLRError
from . import _console

F = TypeVar("F", bound=Callable[..., Any])


def debug_enabled() -> bool:
    """Whether ``SIMCLR_DEBUG`` asks for full tracebacks.

    Raises:
        ConfigError: When ``SIMCLR_DEBUG`` is not a yes or a no.
    """
    return _env.debug()


def print_error(message: str) -> None:
    """Print one red error line on stderr."""
    _console.stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def handle_errors(command: F) -> F:
    """Wrap a command so that errors end it with one line and an exit code, not a traceback.

    ``SimCLRError`` exits with its ``exit_code`` (1 for input, 2 for usage); an unexpected error
    exits 1 with its type and message; Ctrl-C exits 130. ``SIMCLR_DEBUG=1`` re-raises instead.
    A ``SIMCLR_*`` switch with a value it cannot take ends the command first, with exit code 2.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            _env.check_all()  # A SIMCLR_* switch it cannot read is one line, before any work.
        except ConfigError as error:
            print_error(str(error))
            raise typer.Exit(error.exit_code) from None
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except SimCLRError as error:
            if debug_enabled():
                raise
            from ._config import describe_source  # Here: _config imports this module.

            print_error(describe_source(str(error)))
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            if debug_enabled():
                raise
            print_error("interrupted")
            raise typer.Exit(130) from None
        except MemoryError:
            if debug_enabled():
                raise
            print_error("out of memory; lower --batch-size or --image-size")
            raise typer.Exit(1) from None
        except Exception as error:
            if debug_enabled():
                raise
            text = str(error).strip().splitlines()[0] if str(error).strip() else ""
            if "out of memory" in text.lower():
                print_error("out of memory; lower --batch-size or --image-size")
            else:
                print_error(
                    f"unexpected {type(error).__name__}: {text} "
                    "(run again with SIMCLR_DEBUG=1 for the traceback)"
                )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
