"""Protocol selection and the escape sequences of each way to draw a picture in a terminal."""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image

from simclr_cli.core.choices import Protocol
from simclr_cli.core.viz.terminal import (
    KITTY_CHUNK,
    detect_protocol,
    encode_half_blocks,
    encode_iterm,
    encode_kitty,
    rgb_to_xterm256,
)

RED, BLUE, DARK, TEAL = (255, 0, 0), (0, 0, 255), (10, 20, 30), (40, 150, 160)


def _two_by_two() -> Image.Image:
    image = Image.new("RGB", (2, 2))
    image.putpixel((0, 0), RED)
    image.putpixel((0, 1), BLUE)
    image.putpixel((1, 0), DARK)
    image.putpixel((1, 1), TEAL)
    return image


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"TERM": "xterm-kitty"}, Protocol.kitty),
        ({"TERM": "xterm-256color", "KITTY_WINDOW_ID": "1"}, Protocol.kitty),
        ({"TERM": "xterm-ghostty", "COLORTERM": "truecolor"}, Protocol.kitty),
        ({"TERM": "xterm-256color", "TERM_PROGRAM": "iTerm.app"}, Protocol.iterm),
        ({"TERM": "xterm-256color", "LC_TERMINAL": "iTerm2"}, Protocol.iterm),
        ({"TERM": "xterm-256color", "TERM_PROGRAM": "WezTerm"}, Protocol.iterm),
        ({"TERM": "xterm-256color", "COLORTERM": "truecolor"}, Protocol.truecolor),
        ({"TERM": "xterm-256color", "COLORTERM": "24bit"}, Protocol.truecolor),
        ({"TERM": "xterm-256color"}, Protocol.color256),
        ({}, Protocol.color256),
        ({"TERM": "dumb", "COLORTERM": "truecolor"}, Protocol.none),
        # tmux does not pass graphics through by default: half blocks instead.
        (
            {"TERM": "xterm-kitty", "TMUX": "/tmp/t,1,0", "COLORTERM": "truecolor"},
            Protocol.truecolor,
        ),
        ({"TERM": "screen-256color", "TERM_PROGRAM": "iTerm.app"}, Protocol.color256),
    ],
)
def test_detect_protocol__from_environment_variables(environ, expected):
    assert detect_protocol(environ, is_terminal=True) is expected


def test_detect_protocol__nothing_when_output_is_not_a_terminal():
    assert detect_protocol({"TERM": "xterm-kitty"}, is_terminal=False) is Protocol.none


def test_encode_half_blocks__truecolor_cells_carry_upper_and_lower_pixel():
    (line,) = encode_half_blocks(_two_by_two(), truecolor=True)
    assert line == (
        "\x1b[38;2;255;0;0m\x1b[48;2;0;0;255m▀\x1b[38;2;10;20;30m\x1b[48;2;40;150;160m▀\x1b[0m"
    )


def test_encode_half_blocks__256_colours_use_the_nearest_palette_entries():
    (line,) = encode_half_blocks(_two_by_two(), truecolor=False)
    assert line == "\x1b[38;5;196m\x1b[48;5;21m▀\x1b[38;5;233m\x1b[48;5;31m▀\x1b[0m"


@pytest.mark.parametrize(
    ("rgb", "index"),
    [((255, 0, 0), 196), ((0, 0, 255), 21), ((128, 128, 128), 244), ((40, 150, 160), 31)],
)
def test_rgb_to_xterm256__known_colours(rgb, index):
    assert rgb_to_xterm256(*rgb) == index


def test_encode_half_blocks__transparent_pixels_and_odd_height_leave_the_background():
    image = Image.new("RGBA", (3, 3), (0, 0, 0, 0))
    image.putpixel((0, 0), (*RED, 255))  # upper only
    image.putpixel((1, 1), (*BLUE, 255))  # lower only
    image.putpixel((2, 2), (*TEAL, 255))  # last, odd row: upper of a padded cell
    first, second = encode_half_blocks(image)
    assert first == ("\x1b[38;2;255;0;0m\x1b[49m▀\x1b[38;2;0;0;255m\x1b[49m▄\x1b[39;49m \x1b[0m")
    assert second.endswith("\x1b[38;2;40;150;160m\x1b[49m▀\x1b[0m")
    assert second.count(" ") == 2


def _decode_png(payload: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.standard_b64decode(payload)))


def test_encode_kitty__chunked_png_with_columns_and_quiet_replies():
    image = Image.effect_noise((120, 90), 64).convert("RGB")  # noise compresses badly: chunks
    text = encode_kitty(image, columns=30)
    sequences = re.findall(r"\x1b_G([^;]*);([^\x1b]*)\x1b\\", text)
    assert "".join(f"\x1b_G{keys};{data}\x1b\\" for keys, data in sequences) == text
    assert sequences[0][0] == "a=T,f=100,c=30,q=2,m=1"
    assert [keys for keys, _ in sequences[1:-1]] == ["m=1"] * (len(sequences) - 2)
    assert sequences[-1][0] == "m=0" and len(sequences) > 2
    assert all(len(data) <= KITTY_CHUNK for _, data in sequences)
    decoded = _decode_png("".join(data for _, data in sequences))
    assert decoded.size == (120, 90) and decoded.tobytes() == image.tobytes()


def test_encode_kitty__small_image_is_one_sequence():
    text = encode_kitty(_two_by_two(), columns=4)
    assert text.startswith("\x1b_Ga=T,f=100,c=4,q=2,m=0;") and text.endswith("\x1b\\")
    assert text.count("\x1b_G") == 1


def test_encode_iterm__osc_1337_with_size_width_and_png():
    text = encode_iterm(_two_by_two(), columns=12, name="x.png")
    match = re.fullmatch(r"\x1b\]1337;File=([^:]*):([A-Za-z0-9+/=]*)\a", text)
    assert match is not None
    arguments = dict(item.split("=", 1) for item in match.group(1).split(";"))
    payload = match.group(2)
    assert arguments["inline"] == "1" and arguments["width"] == "12"
    assert arguments["height"] == "auto" and arguments["preserveAspectRatio"] == "1"
    assert int(arguments["size"]) == len(base64.standard_b64decode(payload))
    assert base64.standard_b64decode(arguments["name"]) == b"x.png"
    decoded = _decode_png(payload).convert("RGB")
    assert decoded.getpixel((0, 0)) == RED and decoded.getpixel((1, 1)) == TEAL
