"""A small TOML writer for flat configuration tables, and the one check of every output folder."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from .errors import RunFolderError


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
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
        lines += [f"{key} = {_value(value)}" for key, value in table.items() if value is not None]
        lines.append("")
    return "\n".join(lines)


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
        raise RunFolderError(f"{name} {path} is a file; give a folder")
    if not folder and path.is_dir():
        raise RunFolderError(f"{name} {path} is a folder; give a file name")
    if not force:
        if folder and path.is_dir() and any(p.name not in ignore for p in path.iterdir()):
            raise RunFolderError(
                f"{name} {path} is not empty; choose another --out or add --force to replace it"
            )
        if not folder and path.exists():
            raise RunFolderError(
                f"{name} {path} exists; choose another --out or add --force to replace it"
            )
    if create:
        try:
            (path if folder else path.parent).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunFolderError(f"cannot create {name} {path} ({error.strerror})") from None
    return path
