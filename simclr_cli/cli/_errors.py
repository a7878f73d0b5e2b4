"""Turning errors into one red line and an exit code, at the edge of the program.

Every command of the application is a ``ReportingCommand`` (``app.command(cls=...)``), so no
command needs error handling of its own.
"""

from __future__ import annotations

from typing import Any

import typer
import typer.core

from ..core import _env
from ..core.distributed.launcher import lost_peer_error
from ..core.errors import ConfigError, SimCLRError
from ._config import describe_source
from ._console import print_error

#: The line printed for an out-of-memory error, wherever it was raised.
OUT_OF_MEMORY = "out of memory; lower --batch-size or --image-size"


def debug_enabled() -> bool:
    """Whether ``SIMCLR_DEBUG`` asks for full tracebacks.

    Raises:
        ConfigError: When ``SIMCLR_DEBUG`` is not a yes or a no.
    """
    return _env.debug()


class ReportingCommand(typer.core.TyperCommand):
    """Typer's command, ending every error with one red line on stderr and an exit code.

    ``SimCLRError`` exits with its ``exit_code`` (1 for input, 2 for usage) and, when the flag
    it names (``error.flag``) was set by a config file or a ``SIMCLR_<FLAG>`` variable, says
    which; an unexpected error exits 1 with its type and message; Ctrl-C exits 130.
    ``SIMCLR_DEBUG=1`` re-raises instead, for the traceback. A ``SIMCLR_*`` switch with a value
    it cannot take ends the command first, with exit code 2.
    """

    # ``Any``: Typer hands over its own click context, whose class is not part of its public API.
    def invoke(self, ctx: Any) -> Any:
        try:
            _env.check_all()  # A SIMCLR_* switch it cannot read is one line, before any work.
        except ConfigError as error:
            print_error(str(error))
            raise typer.Exit(error.exit_code) from None
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except SimCLRError as error:
            if debug_enabled():
                raise
            print_error(str(error) + describe_source(ctx, error.flag))
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            if debug_enabled():
                raise
            print_error("interrupted")
            raise typer.Exit(130) from None
        except MemoryError:
            if debug_enabled():
                raise
            print_error(OUT_OF_MEMORY)
            raise typer.Exit(1) from None
        except Exception as error:
            if debug_enabled():
                raise
            text = str(error).strip().splitlines()[0] if str(error).strip() else ""
            lost_peer = lost_peer_error(error)
            if lost_peer is not None:  # A rank under torchrun whose peer went away.
                print_error(str(lost_peer))
            elif "out of memory" in text.lower():
                print_error(OUT_OF_MEMORY)
            else:
                print_error(
                    f"unexpected {type(error).__name__}: {text} "
                    "(run again with SIMCLR_DEBUG=1 for the traceback)"
                )
            raise typer.Exit(1) from None
