"""Ending the process quickly once the command is done.

A Python process that has imported torch and timm spends a second or more in the interpreter's
own shutdown (a full garbage collection over several hundred thousand objects and the teardown
of every module) after the command's last line is printed: 1.4 s of a 5 s ``simclr info`` on a
2-core CPU. ``--time-budget`` bounds the whole process, and every command's user waits for that
second, so the console script ends its process itself once the command has returned: the exit
handlers run as usual (the loader's worker processes are reaped, logs are flushed), the standard
streams are flushed, and the process exits without the interpreter's teardown. Every file the
commands write is closed before the command returns, so nothing is lost.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from typing import NoReturn


def exit_code_of(request: SystemExit) -> int:
    """The status a ``SystemExit`` stands for: None is 0, a message is 1 (printed to stderr)."""
    code = request.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def end_process(code: int) -> NoReturn:
    """Run the exit handlers, flush the standard streams and end the process with ``code``.

    Under a profiler, a debugger or a coverage tracer the interpreter exits as usual, so that
    they write their results when it ends.
    """
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe (``simclr embed ... | head``) or a closed stream has nothing to flush.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
