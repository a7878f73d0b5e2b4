"""Files and text the whole core shares: atomic writes, PNG, TOML and one duration grammar.

- ``atomic_write``: a crash leaves the old file or the new one, never half of either, and the
  new file gets the mode a plain ``open()`` would give it (models, pictures and tables are meant
  to be shared).
- ``check_png_path`` and ``write_png``: every picture the package writes.
- ``dumps`` and ``loads``: TOML (the standard library only reads it, and only from Python 3.11;
  3.10 reads it with the ``tomli`` backport).
- ``parse_duration``, ``format_duration`` and ``parse_interval``: ``--time-budget 1h30m`` and
  ``--checkpoint-every 1h30m`` read the same way; ``--checkpoint-every 500`` is a step count.
- ``prepare_output``: the one check of every output folder or file (``--force`` to replace).
- ``parse_size``: sizes in bytes such as ``1GB``, ``500MB``, ``2GiB`` or ``2e9``.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, DataError, DiskFullError, RunFolderError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the tomli backport.
    import tomli as tomllib

if TYPE_CHECKING:
    from PIL import Image

# ---------------------------------------------------------------------------------------------
# Atomic writes.


def file_mode() -> int:
    """The mode a plain ``open()`` gives a new file: 0666 less the process's umask."""
    # The umask can only be read by setting it; set it straight back.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write: Callable[[str], Any]) -> None:
    """Write a file so that a crash leaves either the old file or the new one, never half.

    Args:
        path: Destination; its folder is created if missing.
        write: Callable that writes the content to the temporary path it is given.

    Raises:
        DiskFullError: When the disk or quota fills up; the old file stays as it was.
    """
    path = Path(path)
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
        )
        os.close(handle)
        write(temporary)
        # mkstemp (and safetensors, which replaces the file) make it private (0600); give it
        # the mode a plain open() would, so that models can be shared like any other file.
        os.chmod(temporary, file_mode())
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = f"the previous {path.name} is intact" if path.exists() else "nothing was written"
            raise DiskFullError(
                f"no space left on the disk while writing {path} ({kept}); free some space "
                "and try again"
            ) from None
        raise


# ---------------------------------------------------------------------------------------------
# PNG.


def check_png_path(path: Path, *, flag: str) -> Path:
    """Refuse a file name that does not end in .png, before any work is done.

    Args:
        path: The file to write.
        flag: The flag that named it (``--save``, ``--map``), for the message.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        DataError: When ``path`` does not end in .png.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DataError(f"{flag} {path}: give a file name ending in .png", flag=flag)
    return path


def write_png(image: Image.Image, path: Path, *, optimize: bool = True) -> None:
    """Write a picture as a PNG, atomically, with a plain file's mode.

    Args:
        image: The picture.
        path: The ``.png`` file; its folder is created if missing.
        optimize: Spend more time for a smaller file (off for large pictures written once).

    Raises:
        DataError: When the file cannot be written.
    """
    path = Path(path)
    try:
        atomic_write(path, lambda temporary: image.save(temporary, format="PNG", optimize=optimize))
    except OSError as error:
        raise DataError(f"cannot write {path}: {error.strerror or error}") from None


# ---------------------------------------------------------------------------------------------
# TOML.


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(str(value), ensure_ascii=False)


def dumps(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """Render ``{table: {key: value}}`` as TOML; keys whose value is None are left out.

    Args:
        tables: Table names mapped to flat dicts of str, int, float, bool or lists of those.

    Returns:
        The TOML text.
    """
    lines: list[str] = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [
            f"{key} = {_toml_value(value)}" for key, value in table.items() if value is not None
        ]
        lines.append("")
    return "\n".join(lines)


def loads(text: str) -> dict[str, Any]:
    """Parse TOML text.

    Raises:
        ValueError: When the text is not TOML (``tomllib.TOMLDecodeError`` is one).
    """
    return tomllib.loads(text)


# ---------------------------------------------------------------------------------------------
# Durations.

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([smhd])")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")


@dataclass(frozen=True)
class CheckpointInterval:
    """How often to checkpoint: every ``steps`` steps, or every ``seconds`` of wall time."""

    steps: int | None = None
    seconds: float | None = None


def _seconds(text: str) -> float | None:
    """Seconds in ``265s``, ``10m``, ``2h``, ``1h30m`` or ``1.5d``; None for other text."""
    cleaned = text.strip().lower().replace(" ", "")
    position, seconds = 0, 0.0
    for match in _PART.finditer(cleaned):
        if match.start() != position:
            return None
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    return seconds if cleaned and position == len(cleaned) else None


def parse_duration(text: str | float | int, *, flag: str = "--time-budget") -> float:
    """Read a duration such as ``265s``, ``10m``, ``2h``, ``1h30m`` or ``90`` (seconds).

    Units are ``s``, ``m``, ``h`` and ``d``; parts add up (``1h30m`` is 5400 s) and a plain
    number is seconds.

    Args:
        text: The duration, or a number of seconds.
        flag: The flag it came from, named in the error.

    Returns:
        The duration in seconds.

    Raises:
        ConfigError: When the text is not a positive duration.
    """
    if isinstance(text, int | float):
        parsed: float | None = float(text)
    else:
        cleaned = str(text).strip()
        parsed = float(cleaned) if _NUMBER.fullmatch(cleaned) else _seconds(cleaned)
    if parsed is None:
        raise ConfigError(
            f"{flag} {text!r} is not a duration; write it like 265s, 10m, 2h or 1h30m",
            flag=flag,
        )
    seconds = parsed
    if not seconds > 0 or math.isinf(seconds):
        raise ConfigError(f"{flag} {text!r} must be a positive duration, such as 10m", flag=flag)
    return seconds


#: Multipliers of the size units, decimal (``GB``) and binary (``GiB``); case is ignored.
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)")


def parse_size(text: str | int | float, *, flag: str = "--shard-size") -> int:
    """Read a size in bytes such as ``1GB``, ``500MB``, ``2GiB``, ``2e9`` or ``4096``.

    Args:
        text: The size, or a number of bytes.
        flag: The flag it came from, named in the error.

    Returns:
        The size in bytes.

    Raises:
        ConfigError: When the text is not a positive size.
    """
    match = _SIZE.fullmatch(str(text).strip().lower())
    if match is None or match.group(2) not in _SIZE_UNITS:
        raise ConfigError(
            f"{flag} {text!r} is not a size; write it like 1GB, 500MB or 2GiB", flag=flag
        )
    size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    if size <= 0:
        raise ConfigError(f"{flag} {text!r} must be a positive size, such as 1GB", flag=flag)
    return size


def format_duration(seconds: float) -> str:
    """``265.4`` -> ``4m25s``; ``7260`` -> ``2h01m00s`` (``parse_duration`` reads both back)."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s"


def parse_interval(text: str | int, *, flag: str = "--checkpoint-every") -> CheckpointInterval:
    """Read ``--checkpoint-every``: ``500`` (steps) or a duration (``30s``, ``10m``, ``1h30m``).

    Args:
        text: A whole number of steps, or a duration with units as ``parse_duration`` reads.
        flag: The flag it came from, named in the error.

    Returns:
        The interval, in steps or in seconds.

    Raises:
        ConfigError: For anything else, or a zero interval.
    """
    cleaned = str(text).strip()
    if _NUMBER.fullmatch(cleaned):
        if "." in cleaned:
            raise ConfigError(f"{flag} {text!r}: a number of steps is whole", flag=flag)
        if int(cleaned) <= 0:
            raise ConfigError(
                f"{flag} {text!r} must be a positive number of steps, such as 500", flag=flag
            )
        return CheckpointInterval(steps=int(cleaned))
    seconds = _seconds(cleaned)
    if seconds is None or not seconds > 0 or math.isinf(seconds):
        raise ConfigError(
            f"{flag} {text!r} is not a positive number of steps (500) or a duration "
            "(30s, 10m, 2h, 1h30m)",
            flag=flag,
        )
    return CheckpointInterval(seconds=seconds)


# ---------------------------------------------------------------------------------------------
# Output folders


def prepare_output(
    path: Path,
    *,
    force: bool,
    folder: bool = True,
    create: bool = True,
    ignore: Collection[str] = (),
    name: str = "--out",
) -> Path:
    """Refuse to replace earlier output unless ``force``, then create the output's folder.

    The one check behind every command that writes a folder or a file (``pretrain``, ``export``,
    ``finetune``): a non-empty folder, or an existing file, is only written over with ``--force``.

    Args:
        path: The output: a folder (``folder``) or a file.
        force: Whether replacing earlier output was asked for.
        folder: True when ``path`` is a folder, False when it is a file.
        create: Create the folder (for a file, its parent); False only checks, so nothing is
            created or removed.
        ignore: Names inside the folder that are not earlier output (a lock file, say).
        name: How messages call the output (``--out``, ``run folder``).

    Returns:
        ``path``.

    Raises:
        RunFolderError: When ``path`` is a file where a folder is wanted (or the reverse),
            holds earlier output while ``force`` is off, or cannot be created.
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise RunFolderError(f"{name} {path} is a file; give a folder", flag="--out")
    if not folder and path.is_dir():
        raise RunFolderError(f"{name} {path} is a folder; give a file name", flag="--out")
    if not force:
        if folder and path.is_dir() and any(p.name not in ignore for p in path.iterdir()):
            raise RunFolderError(
                f"{name} {path} is not empty; choose another --out or add --force to replace it",
                flag="--out",
            )
        if not folder and path.exists():
            raise RunFolderError(
                f"{name} {path} exists; choose another --out or add --force to replace it",
                flag="--out",
            )
    if create:
        try:
            (path if folder else path.parent).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunFolderError(f"cannot create {name} {path} ({error.strerror})") from None
    return path
