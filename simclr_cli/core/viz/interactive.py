"""A full-screen key loop for ``visualize-aug --interactive``: read a key, act, redraw in place.

The terminal is put in cbreak mode (keys arrive one at a time, unechoed, Ctrl-C still
interrupts) on the alternate screen, and both are restored however the loop ends. The loop knows
nothing about images: it gets a ``render`` function for the frame and a ``handle`` function that
turns a key into a status message.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import TextIO

from ..errors import DisplayError, UsageError

ESC = "\x1b"
ENTER_SCREEN = f"{ESC}[?1049h{ESC}[?25l"
LEAVE_SCREEN = f"{ESC}[?25h{ESC}[?1049l"
CLEAR = f"{ESC}[H{ESC}[2J"
#: Keys that end the loop: q, Q, Escape, Ctrl-D.
QUIT_KEYS = ("q", "Q", ESC, "\x04")
HELP = "space new views   + / - colour strength   p preset   s save   q quit"


class Quit(Exception):
    """Raised by a key handler to end the loop."""


def read_key(descriptor: int) -> str:
    """Read one key press (one byte; escape sequences arrive as several keys)."""
    data = os.read(descriptor, 1)
    if not data:
        raise Quit
    return data.decode("latin-1")


def run_key_loop(
    *,
    render: Callable[[int, int], str],
    handle: Callable[[str], str],
    input_descriptor: int,
    output: TextIO,
    clear: str = CLEAR,
) -> None:
    """Draw, wait for a key, act on it, and draw again in place until a quit key.

    Args:
        render: Makes the frame for a terminal of (columns, rows) cells.
        handle: Acts on a key and returns a one-line status message; raises ``Quit`` to end.
        input_descriptor: File descriptor of the terminal to read keys from.
        output: Where frames are written.
        clear: What wipes the previous frame (protocols with images add their own deletion).

    Raises:
        UsageError: When the input is not a terminal or the platform has no termios.
    """
    if not os.isatty(input_descriptor):
        raise UsageError(
            "--interactive needs a terminal on stdin; run it in a terminal", flag="--interactive"
        )
    try:
        import termios
        import tty
    except ImportError:
        raise UsageError(
            "--interactive needs a POSIX terminal; use --save instead", flag="--interactive"
        ) from None
    saved = termios.tcgetattr(input_descriptor)
    status = "ready"
    try:
        tty.setcbreak(input_descriptor)
        output.write(ENTER_SCREEN)
        while True:
            size = shutil.get_terminal_size()
            try:
                frame = render(size.columns, size.lines)
            except DisplayError as error:
                frame = str(error)
            output.write(f"{clear}{frame}\n\n{status}\n{HELP}")
            output.flush()
            key = read_key(input_descriptor)
            if key in QUIT_KEYS:
                return
            try:
                status = handle(key)
            except Quit:
                return
    finally:
        output.write(LEAVE_SCREEN)
        output.flush()
        termios.tcsetattr(input_descriptor, termios.TCSADRAIN, saved)
