"""Pictures in a terminal: choosing a protocol and encoding images as escape sequences.

Four ways to draw, best first:

- the Kitty graphics protocol (kitty, Ghostty, WezTerm), a PNG sent in base64 chunks;
- the iTerm2 inline-image protocol (iTerm2, WezTerm), a PNG in one OSC 1337 sequence;
- Unicode half blocks ``▀`` whose foreground is the upper pixel and background the lower one, in
  24-bit colour when ``COLORTERM`` announces it;
- the same half blocks in the xterm 256-colour palette, which every colour terminal has.

Everything here returns strings and reads the environment from a mapping it is given, so it can
be tested without a terminal. Transparent pixels (alpha 0) stay the terminal's background.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping

import numpy as np
from PIL import Image

from ..choices import Protocol

ESC = "\x1b"
#: Resets all colours and attributes.
RESET = f"{ESC}[0m"
UPPER_HALF_BLOCK = "\u2580"
LOWER_HALF_BLOCK = "\u2584"
#: Largest base64 payload of one Kitty graphics escape sequence.
KITTY_CHUNK = 4096


def detect_protocol(environ: Mapping[str, str], *, is_terminal: bool) -> Protocol:
    """Pick the best protocol that the terminal announces through its environment variables.

    Graphics protocols are skipped inside tmux and screen, which do not pass them through
    without extra configuration, and everything is skipped when output is not a terminal.

    Args:
        environ: Environment variables, such as ``os.environ``.
        is_terminal: Whether the output is a terminal.

    Returns:
        ``kitty``, ``iterm``, ``truecolor``, ``256``, or ``none`` when output is not a terminal
        or the terminal is ``dumb``.
    """
    term = environ.get("TERM", "").lower()
    if not is_terminal or term == "dumb":
        return Protocol.none
    program = environ.get("TERM_PROGRAM", "").lower()
    multiplexed = bool(environ.get("TMUX")) or term.startswith(("screen", "tmux"))
    if not multiplexed:
        if "kitty" in term or environ.get("KITTY_WINDOW_ID") or "ghostty" in (term + program):
            return Protocol.kitty
        if (
            program in ("iterm.app", "wezterm")
            or environ.get("LC_TERMINAL", "").lower() == "iterm2"
        ):
            return Protocol.iterm
    if environ.get("COLORTERM", "").lower() in ("truecolor", "24bit"):
        return Protocol.truecolor
    return Protocol.color256


def to_png_bytes(image: Image.Image) -> bytes:
    """Encode an image as PNG bytes (fast compression: the bytes go to a terminal)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def encode_kitty(image: Image.Image, *, columns: int) -> str:
    """The Kitty graphics escape sequences that draw an image ``columns`` cells wide.

    The PNG travels in base64 chunks of at most 4096 bytes, ``m=1`` on all but the last; the
    terminal computes the rows from the aspect ratio; ``q=2`` silences its replies, which would
    otherwise arrive on stdin as if typed.

    Args:
        image: The picture (RGB or RGBA).
        columns: Width on screen in terminal cells.

    Returns:
        The escape sequences, without a trailing newline.
    """
    payload = base64.standard_b64encode(to_png_bytes(image)).decode("ascii")
    chunks = [payload[i : i + KITTY_CHUNK] for i in range(0, len(payload), KITTY_CHUNK)] or [""]
    parts = []
    for index, chunk in enumerate(chunks):
        more = 1 if index < len(chunks) - 1 else 0
        keys = f"a=T,f=100,c={columns},q=2,m={more}" if index == 0 else f"m={more}"
        parts.append(f"{ESC}_G{keys};{chunk}{ESC}\\")
    return "".join(parts)


def kitty_delete_all() -> str:
    """The Kitty sequence that removes every image on screen (before a redraw)."""
    return f"{ESC}_Ga=d,q=2{ESC}\\"


def encode_iterm(image: Image.Image, *, columns: int, name: str = "augmentations.png") -> str:
    """The iTerm2 inline-image sequence (OSC 1337) that draws an image ``columns`` cells wide.

    Args:
        image: The picture (RGB or RGBA).
        columns: Width on screen in terminal cells; the height follows the aspect ratio.
        name: File name the terminal shows if the image is saved from it.

    Returns:
        The escape sequence, without a trailing newline.
    """
    data = to_png_bytes(image)
    encoded_name = base64.standard_b64encode(name.encode()).decode("ascii")
    payload = base64.standard_b64encode(data).decode("ascii")
    arguments = (
        f"name={encoded_name};size={len(data)};width={columns};height=auto;"
        "preserveAspectRatio=1;inline=1"
    )
    return f"{ESC}]1337;File={arguments}:{payload}\a"


def _rgba_array(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image.convert("RGBA"), dtype=np.uint8)
    if pixels.shape[0] % 2:
        # An odd height gets a transparent last row, so every cell has two pixels.
        pad = np.zeros((1, pixels.shape[1], 4), dtype=np.uint8)
        pixels = np.concatenate([pixels, pad], axis=0)
    return pixels


def rgb_to_xterm256(red: int, green: int, blue: int) -> int:
    """The nearest colour of the xterm 256-colour palette (its 6x6x6 cube or 24 grays).

    The 16 system colours (0-15) are skipped: terminals redefine them with themes.
    """
    levels = (0, 95, 135, 175, 215, 255)

    def nearest_level(value: int) -> int:
        return min(range(6), key=lambda index: abs(levels[index] - value))

    cube = [nearest_level(red), nearest_level(green), nearest_level(blue)]
    cube_rgb = [levels[index] for index in cube]
    cube_index = 16 + 36 * cube[0] + 6 * cube[1] + cube[2]
    gray_step = min(23, max(0, round(((red + green + blue) / 3 - 8) / 10)))
    gray_value = 8 + 10 * gray_step

    def distance(rgb: list[int] | tuple[int, int, int]) -> int:
        return sum((a - b) ** 2 for a, b in zip(rgb, (red, green, blue), strict=True))

    if distance((gray_value,) * 3) < distance(cube_rgb):
        return 232 + gray_step
    return cube_index


def _color(rgb: np.ndarray, *, background: bool, truecolor: bool) -> str:
    red, green, blue = (int(v) for v in rgb[:3])
    layer = 48 if background else 38
    if truecolor:
        return f"{ESC}[{layer};2;{red};{green};{blue}m"
    return f"{ESC}[{layer};5;{rgb_to_xterm256(red, green, blue)}m"


def encode_half_blocks(image: Image.Image, *, truecolor: bool = True) -> list[str]:
    """Draw an image with ``▀`` cells: one cell per pixel column, two pixel rows per cell.

    Each cell sets its foreground (the upper pixel) and background (the lower pixel) colour and
    each line ends with a reset, so lines can be placed side by side with other text.

    Args:
        image: The picture; its width is the number of cells per line.
        truecolor: 24-bit colours (``38;2;R;G;B``) when True, else the 256-colour palette
            (``38;5;N``).

    Returns:
        One string per line of cells, ``ceil(height / 2)`` of them.
    """
    pixels = _rgba_array(image)
    lines = []
    for row in range(0, pixels.shape[0], 2):
        cells = []
        for upper, lower in zip(pixels[row], pixels[row + 1], strict=True):
            upper_visible, lower_visible = upper[3] > 0, lower[3] > 0
            if upper_visible and lower_visible:
                cells.append(
                    _color(upper, background=False, truecolor=truecolor)
                    + _color(lower, background=True, truecolor=truecolor)
                    + UPPER_HALF_BLOCK
                )
            elif upper_visible:
                cells.append(
                    _color(upper, background=False, truecolor=truecolor)
                    + f"{ESC}[49m"
                    + UPPER_HALF_BLOCK
                )
            elif lower_visible:
                cells.append(
                    _color(lower, background=False, truecolor=truecolor)
                    + f"{ESC}[49m"
                    + LOWER_HALF_BLOCK
                )
            else:
                cells.append(f"{ESC}[39;49m ")
        lines.append("".join(cells) + RESET)
    return lines
