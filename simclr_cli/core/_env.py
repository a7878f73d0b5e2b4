"""Every ``SIMCLR_*`` switch the package reads, declared once, with typed accessors.

These switches are not flags: they pick an implementation or bound a resource where a flag would
be noise for almost every user (``SIMCLR_NT_XENT=reference`` to compare the loss kernels with the
specification, ``SIMCLR_CACHE_BUDGET`` on a small machine). ``SWITCHES`` is the table; each
accessor reads the environment when it is called (so a test's ``monkeypatch.setenv`` and a
worker process both see the current value) and raises ``ConfigError``, naming the variable and
the values it takes, for a value it cannot use. An unset or empty variable means the default.
``check_all`` reads every switch, so that a command can refuse a bad one before any work (a
data-loader worker that meets it would bury the message in a traceback).

No other module reads a ``SIMCLR_*`` variable. The command line names a variable after each flag
(``--batch-size`` -> ``SIMCLR_BATCH_SIZE``) and skips the names in ``NAMES``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import ConfigError


@dataclass(frozen=True)
class Switch:
    """One environment variable the package reads.

    Attributes:
        name: The variable, ``SIMCLR_...``.
        meaning: What it changes, in one sentence.
        default: What an unset or empty variable means.
        allowed: The values it takes, as an error message lists them.
    """

    name: str
    meaning: str
    default: str
    allowed: str


CACHE_BUDGET = Switch(
    "SIMCLR_CACHE_BUDGET",
    "Bytes that --cache auto may fill with decoded training images on this machine, shared "
    "equally by its ranks.",
    "half the available memory",
    "a number of bytes, such as 2e9",
)
CACHE_DIR = Switch(
    "SIMCLR_CACHE_DIR",
    "Folder of the caches kept between runs (file indexes, measured speed settings); off for none.",
    "$XDG_CACHE_HOME/simclr, else ~/.cache/simclr",
    "an absolute folder path (or ~/...), or off",
)
CHANNELS_LAST = Switch(
    "SIMCLR_CHANNELS_LAST",
    "Train with channels-last (NHWC) activations and weights, or not.",
    "auto: on a GPU with mixed precision and on the CPU with bf16",
    "auto, 0 or 1",
)
COLLECTIVE_TIMEOUT = Switch(
    "SIMCLR_COLLECTIVE_TIMEOUT",
    "Seconds a collective of a multi-process run waits for the other ranks before failing.",
    "600",
    "a positive number of seconds",
)
DEBUG = Switch(
    "SIMCLR_DEBUG",
    "Show the full traceback of an error instead of one line.",
    "0",
    "0, 1, false, true, no, yes, off or on",
)
MAX_IMAGE_PIXELS = Switch(
    "SIMCLR_MAX_IMAGE_PIXELS",
    "Largest image decoded, in pixels (a decompression-bomb guard); 0 turns the guard off.",
    "Pillow's threshold, about 89 megapixels",
    "a whole number of pixels, 0 or more",
)
NT_XENT = Switch(
    "SIMCLR_NT_XENT",
    "Implementation of the NT-Xent loss.",
    "auto: fused on a CUDA GPU with Triton, chunked otherwise",
    "auto, reference, chunked or fused",
)
SYNC_BN = Switch(
    "SIMCLR_SYNC_BN",
    "Batch norm over all ranks with --sync-bn: PyTorch's SyncBatchNorm, or the reference.",
    "auto: SyncBatchNorm on CUDA, the reference GlobalBatchNorm on the CPU",
    "auto or reference",
)
THREADS = Switch(
    "SIMCLR_THREADS",
    "Intra-op threads of a CPU run: the idle cores, or a count.",
    "torch's own choice (all cores)",
    "auto or a whole number of threads",
)

#: Every switch, in the order of their names.
SWITCHES: tuple[Switch, ...] = (
    CACHE_BUDGET,
    CACHE_DIR,
    CHANNELS_LAST,
    COLLECTIVE_TIMEOUT,
    DEBUG,
    MAX_IMAGE_PIXELS,
    NT_XENT,
    SYNC_BN,
    THREADS,
)
#: The variable names of the switches.
NAMES: frozenset[str] = frozenset(switch.name for switch in SWITCHES)

NtXentImplementation = Literal["auto", "reference", "chunked", "fused"]
NT_XENT_IMPLEMENTATIONS: tuple[NtXentImplementation, ...] = (
    "auto",
    "reference",
    "chunked",
    "fused",
)
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _text(switch: Switch) -> str:
    """The variable's value, stripped; empty when unset."""
    return os.environ.get(switch.name, "").strip()


def _refuse(switch: Switch, value: str) -> ConfigError:
    return ConfigError(
        f"{switch.name}={value!r} is not one of: {switch.allowed}; "
        f"unset it for the default ({switch.default})"
    )


def _number(switch: Switch) -> float | None:
    """The value as a finite number, None when unset; ConfigError for other text."""
    value = _text(switch)
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        raise _refuse(switch, value) from None
    if not math.isfinite(number):
        raise _refuse(switch, value)
    return number


def cache_budget_bytes() -> int | None:
    """``SIMCLR_CACHE_BUDGET``: bytes the image caches of a machine may use, None by default."""
    number = _number(CACHE_BUDGET)
    if number is not None and number < 0:
        raise _refuse(CACHE_BUDGET, _text(CACHE_BUDGET))
    return None if number is None else int(number)


def cache_dir() -> Path | None:
    """``SIMCLR_CACHE_DIR``: the folder of the caches kept between runs, None for ``off``.

    Unset, it is ``simclr`` in the user's cache folder (``XDG_CACHE_HOME``, else ``~/.cache``).
    The folder need not exist: it is made when something is first cached. A relative path is
    refused: its meaning would change with the working folder of each command.

    Raises:
        ConfigError: When the value is neither ``off`` nor an absolute path.
    """
    value = _text(CACHE_DIR)
    if value.lower() == "off":
        return None
    if value:
        folder = Path(value).expanduser()
        if not folder.is_absolute():
            raise _refuse(CACHE_DIR, value)
        return folder
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "simclr"


def channels_last() -> bool | None:
    """``SIMCLR_CHANNELS_LAST``: True or False when set to 1 or 0, None for ``auto``."""
    value = _text(CHANNELS_LAST).lower()
    if value in ("", "auto"):
        return None
    if value not in ("0", "1"):
        raise _refuse(CHANNELS_LAST, value)
    return value == "1"


def collective_timeout_seconds() -> float:
    """``SIMCLR_COLLECTIVE_TIMEOUT``: seconds a collective waits, 600 by default."""
    number = _number(COLLECTIVE_TIMEOUT)
    if number is None:
        return 600.0
    if number <= 0:
        raise _refuse(COLLECTIVE_TIMEOUT, _text(COLLECTIVE_TIMEOUT))
    return number


def debug() -> bool:
    """``SIMCLR_DEBUG``: whether errors show their full traceback."""
    value = _text(DEBUG).lower()
    if value in ("", *_FALSE):
        return False
    if value not in _TRUE:
        raise _refuse(DEBUG, value)
    return True


def max_image_pixels() -> int | None:
    """``SIMCLR_MAX_IMAGE_PIXELS``: the pixel limit (0: none), None for Pillow's threshold."""
    value = _text(MAX_IMAGE_PIXELS)
    if not value:
        return None
    if not value.isdigit():
        raise _refuse(MAX_IMAGE_PIXELS, value)
    return int(value)


def nt_xent_implementation() -> NtXentImplementation:
    """``SIMCLR_NT_XENT``: the loss implementation asked for, ``auto`` by default."""
    value = _text(NT_XENT).lower() or "auto"
    for implementation in NT_XENT_IMPLEMENTATIONS:
        if value == implementation:
            return implementation
    raise _refuse(NT_XENT, value)


def sync_batch_norm_reference() -> bool:
    """``SIMCLR_SYNC_BN``: whether CUDA runs use the reference global batch norm too."""
    value = _text(SYNC_BN).lower()
    if value not in ("", "auto", "reference"):
        raise _refuse(SYNC_BN, value)
    return value == "reference"


def threads() -> int | Literal["auto"] | None:
    """``SIMCLR_THREADS``: ``auto``, a thread count (at least 1), or None to leave torch alone."""
    value = _text(THREADS).lower()
    if not value:
        return None
    if value == "auto":
        return "auto"
    if not value.isdigit():
        raise _refuse(THREADS, value)
    return max(1, int(value))


def check_all() -> None:
    """Read every switch once.

    Raises:
        ConfigError: For the first switch whose value its accessor refuses.
    """
    for read in (
        cache_budget_bytes,
        cache_dir,
        channels_last,
        collective_timeout_seconds,
        debug,
        max_image_pixels,
        nt_xent_implementation,
        sync_batch_norm_reference,
        threads,
    ):
        read()
