"""Embedding files written as they are computed, resumable after an interruption.

An output ``x.npy`` (or ``.csv``, ``.jsonl``, ``.safetensors``, ``.parquet``) is built in the
folder ``x.npy.partial/`` beside it and moved into place when every input is done, so that a
finished ``x.npy`` is never half written. The folder holds:

- ``data.npy`` (for .npy, .safetensors and .parquet): a memory-mapped array of the known size
  (inputs, D), filled row by row; or ``data.csv`` / ``data.jsonl``, written line by line.
- ``rows.txt``: the path of each row written, one a line.
- ``skipped.txt``: ``path<TAB>reason`` of each input left out.
- ``progress.json``: written atomically after the files above are flushed: what the output is
  for (model file, projection, inputs, format), how many inputs are done, how many rows are
  kept, and the byte length of each file at that point.

An interrupted output is one whose ``.partial`` folder exists. ``--resume`` checks that its
``progress.json`` is for the same model and inputs, cuts every file back to the lengths it
records (what was written after it is redone) and embeds the inputs that are left.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from .._io import atomic_write
from ..data.checks import BadImage
from ..data.files import ImageSource
from ..errors import ConfigError, DataError, MissingDependencyError

#: The output suffixes, in the order the help lists them.
OUTPUT_SUFFIXES = (".npy", ".safetensors", ".csv", ".jsonl", ".parquet")
#: Suffixes whose rows go to a memory-mapped array first (written in one go at the end).
_ARRAY_SUFFIXES = (".npy", ".safetensors", ".parquet")
#: Version of ``progress.json``; an older one is not resumed.
PROGRESS_VERSION = 1
#: Rows converted at a time when a .safetensors or .parquet file is written from the array.
_CHUNK_ROWS = 8192


def check_output_path(path: Path) -> str:
    """The suffix of an output file, refused before any work when it cannot be written.

    Raises:
        ConfigError: For an unknown suffix.
        MissingDependencyError: For .parquet without pyarrow.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ConfigError(
            f"--output {path}: unknown suffix {suffix or '(none)'}; use "
            f"{', '.join(OUTPUT_SUFFIXES[:-1])} or {OUTPUT_SUFFIXES[-1]}",
            flag="--output",
        )
    if suffix == ".parquet":
        _pyarrow()
    return suffix


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise MissingDependencyError(
            "--output .parquet needs the pyarrow package; install the extra with "
            "pip install 'simclr-cli[parquet]', or write .npy",
            flag="--output",
        ) from None
    return pyarrow


def partial_folder(output: Path) -> Path:
    """Where an output is built until it is complete: ``x.npy`` -> ``x.npy.partial``."""
    output = Path(output)
    return output.with_name(output.name + ".partial")


def paths_file(output: Path) -> Path:
    """The row paths written beside a .npy output, one a line: ``x.npy`` -> ``x.paths.txt``."""
    return Path(output).with_suffix(".paths.txt")


def inputs_digest(paths: Sequence[ImageSource]) -> str:
    """A SHA-256 of the input paths in order: what a resumed output must be for."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(os.fsencode(str(path)) + b"\0")
    return digest.hexdigest()


def output_key(
    *, model: Path, projection: bool, paths: Sequence[ImageSource], suffix: str
) -> dict[str, Any]:
    """What identifies an output: the model file (path, size, time), the head, the inputs."""
    status = Path(model).stat()
    return {
        "model": str(Path(model).resolve()),
        "model_size": status.st_size,
        "model_mtime_ns": status.st_mtime_ns,
        "projection": projection,
        "inputs": inputs_digest(paths),
        "count": len(paths),
        "format": suffix,
    }


@dataclass
class Progress:
    """The state of a partial output, as ``progress.json`` records it.

    Attributes:
        key: ``output_key`` of the run that writes it.
        dim: Width D of the rows.
        consumed: Inputs done (embedded or skipped), a prefix of the input list.
        rows: Rows written.
        lengths: Byte length of each file of the partial folder at this point.
    """

    key: dict[str, Any]
    dim: int
    consumed: int = 0
    rows: int = 0
    lengths: dict[str, int] | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": PROGRESS_VERSION,
                "key": self.key,
                "dim": self.dim,
                "consumed": self.consumed,
                "rows": self.rows,
                "lengths": self.lengths or {},
            },
            indent=1,
        )


def _read_progress(folder: Path) -> Progress | None:
    try:
        document = json.loads((folder / "progress.json").read_text(encoding="utf-8"))
        if document.get("version") != PROGRESS_VERSION:
            return None
        return Progress(
            key=document["key"],
            dim=int(document["dim"]),
            consumed=int(document["consumed"]),
            rows=int(document["rows"]),
            lengths={name: int(size) for name, size in document["lengths"].items()},
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


class EmbeddingWriter:
    """Writes rows to an output file as they come, in its ``.partial`` folder until done.

    Args:
        output: The output file; its suffix chooses the format.
        key: ``output_key`` of this run.
        dim: Width D of the rows.
        resume: Continue the partial output of the same key; without it a partial output is
            refused (it may hold hours of work).
        metadata: ``backbone`` and ``projection``, written into .safetensors metadata.

    Attributes:
        consumed: Inputs already done when resuming (embedding restarts after them).
        skipped: Inputs left out so far (from before a resume, too).

    Raises:
        DataError: For a partial output without ``resume``, or one for other inputs or model.
    """

    def __init__(
        self,
        output: Path,
        *,
        key: dict[str, Any],
        dim: int,
        resume: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.output = Path(output)
        self.suffix = check_output_path(self.output)
        self.folder = partial_folder(self.output)
        self.metadata = metadata or {}
        self.skipped: list[BadImage] = []
        progress = _read_progress(self.folder) if self.folder.exists() else None
        if self.folder.exists() and not resume:
            done = "" if progress is None else f" ({progress.consumed} of {progress.key['count']} "
            done += "images done)" if progress is not None else ""
            raise DataError(
                f"{self.folder} holds an interrupted embedding{done}; add --resume to continue "
                "it, or delete the folder to start over",
                flag="--resume",
            )
        if progress is not None and progress.key != key:
            changed = [name for name in key if progress.key.get(name) != key[name]]
            raise DataError(
                f"--resume: {self.folder} was written for other {', '.join(changed)} (the model "
                "file, --projection, the inputs or the format must stay the same); delete it to "
                "start over",
                flag="--resume",
            )
        if progress is not None and progress.dim != dim:
            raise DataError(
                f"--resume: {self.folder} holds rows of width {progress.dim}, not {dim}; "
                "delete it to start over",
                flag="--resume",
            )
        self.progress = progress or Progress(key=key, dim=dim)
        self.consumed = self.progress.consumed
        self.resumed = progress is not None
        self._open(resumed=self.resumed)

    # -- files ---------------------------------------------------------------------------------

    def _open(self, *, resumed: bool) -> None:
        if not resumed:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
        lengths = self.progress.lengths or {}
        if resumed:
            # What was written after the last progress.json is cut off and redone.
            for name, size in lengths.items():
                if name != "data.npy":
                    with open(self.folder / name, "r+b") as stream:
                        stream.truncate(size)
            text = (self.folder / "skipped.txt").read_text(
                encoding="utf-8", errors="surrogateescape"
            )
            for line in text.splitlines():
                path, _, reason = line.partition("\t")
                self.skipped.append(BadImage(path, reason))
        # The files stay open while rows come in; close() (or finish()) closes them.
        self._rows = open(  # noqa: SIM115
            self.folder / "rows.txt", "a", encoding="utf-8", errors="surrogateescape"
        )
        self._skipped = open(  # noqa: SIM115
            self.folder / "skipped.txt", "a", encoding="utf-8", errors="surrogateescape"
        )
        self._array: np.memmap | None = None
        self._text: io.TextIOWrapper | None = None
        total = int(self.progress.key["count"])
        if self.suffix in _ARRAY_SUFFIXES:
            data = self.folder / "data.npy"
            if resumed:
                self._array = np.lib.format.open_memmap(data, mode="r+")
            else:
                self._array = np.lib.format.open_memmap(
                    data, mode="w+", dtype=np.float32, shape=(total, self.progress.dim)
                )
        else:
            name = "data" + self.suffix
            self._text = open(  # noqa: SIM115
                self.folder / name, "a", encoding="utf-8", errors="surrogateescape", newline=""
            )
            if not resumed and self.suffix == ".csv":
                header = ["path"] + [f"e{i}" for i in range(self.progress.dim)]
                csv.writer(self._text).writerow(header)

    def write(self, names: Sequence[str], rows: np.ndarray) -> None:
        """Append rows (len(names), D) and their paths."""
        start = self.progress.rows
        if self._array is not None:
            self._array[start : start + len(names)] = rows
        elif self.suffix == ".csv":
            assert self._text is not None  # Opened for every text format.
            writer = csv.writer(self._text)
            writer.writerows(
                [name] + [f"{v:.7g}" for v in row] for name, row in zip(names, rows, strict=True)
            )
        else:
            assert self._text is not None
            self._text.writelines(
                json.dumps({"path": name, "embedding": row.tolist()}) + "\n"
                for name, row in zip(names, rows, strict=True)
            )
        self._rows.writelines(name + "\n" for name in names)
        self.progress.rows += len(names)

    def skip(self, bad: Sequence[BadImage]) -> None:
        """Record inputs left out."""
        self._skipped.writelines(f"{item.path}\t{item.reason}\n" for item in bad)
        self.skipped.extend(bad)

    def commit(self, consumed: int) -> None:
        """Flush what was written and record that the first ``consumed`` inputs are done."""
        if self._array is not None:
            self._array.flush()
        for stream in (self._text, self._rows, self._skipped):
            if stream is not None:
                stream.flush()
        lengths = {
            path.name: path.stat().st_size for path in self.folder.iterdir() if path.is_file()
        }
        lengths.pop("progress.json", None)
        self.progress.consumed = consumed
        self.progress.lengths = lengths
        text = self.progress.to_json()
        atomic_write(self.folder / "progress.json", lambda t: Path(t).write_text(text, "utf-8"))

    def close(self) -> None:
        """Close the files, keeping the partial output (to resume)."""
        for stream in (self._text, self._rows, self._skipped):
            if stream is not None and not stream.closed:
                stream.close()
        self._array = None

    def discard(self) -> None:
        """Close the files and remove the partial output."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def finish(self) -> list[str]:
        """Write the complete output in place, remove the partial folder; return the row paths."""
        rows = self.progress.rows
        self.commit(self.progress.consumed)
        self.close()
        data = self.folder / (
            "data.npy" if self.suffix in _ARRAY_SUFFIXES else "data" + self.suffix
        )
        if self.suffix == ".npy":
            _shrink_npy(data, rows)
            listed = (self.folder / "rows.txt").read_bytes()
            atomic_write(paths_file(self.output), lambda t: Path(t).write_bytes(listed))
            os.replace(data, self.output)
        elif self.suffix == ".safetensors":
            array = np.load(data, mmap_mode="r")[:rows]
            atomic_write(self.output, lambda t: _write_safetensors(t, array, self._metadata()))
        elif self.suffix == ".parquet":
            array = np.load(data, mmap_mode="r")[:rows]
            atomic_write(self.output, lambda t: _write_parquet(t, array, self._names()))
        else:
            os.replace(data, self.output)
        names = self._names()
        shutil.rmtree(self.folder, ignore_errors=True)
        return names

    def _names(self) -> list[str]:
        text = (self.folder / "rows.txt").read_text(encoding="utf-8", errors="surrogateescape")
        return text.splitlines()

    def _metadata(self) -> dict[str, str]:
        return {"paths": json.dumps(self._names()), **self.metadata}


def _shrink_npy(path: Path, rows: int) -> None:
    # The memory map was made for every input; when some were skipped, rewrite the header for
    # the rows kept (padded to the same length, so the data does not move) and cut the file.
    with open(path, "r+b") as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        offset = stream.tell()
        if shape[0] == rows:
            return
        header = repr(
            {
                "descr": np.lib.format.dtype_to_descr(dtype),
                "fortran_order": fortran,
                "shape": (rows, *shape[1:]),
            }
        )
        prefix = 10 if version == (1, 0) else 12
        length = offset - prefix
        stream.seek(prefix)
        stream.write(header.encode("latin1").ljust(length - 1) + b"\n")
        stream.truncate(offset + rows * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)


def _write_safetensors(path: str, array: np.ndarray, metadata: dict[str, str]) -> None:
    # The format is a little-endian u64 header length, a JSON header, then the raw data: written
    # here in chunks from the memory map, so that the whole array is never in memory.
    header = {
        "__metadata__": metadata,
        "embeddings": {
            "dtype": "F32",
            "shape": list(array.shape),
            "data_offsets": [0, int(array.size) * 4],
        },
    }
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as stream:
        stream.write(struct.pack("<Q", len(encoded)))
        stream.write(encoded)
        for start in range(0, array.shape[0], _CHUNK_ROWS):
            chunk = np.ascontiguousarray(array[start : start + _CHUNK_ROWS], dtype="<f4")
            stream.write(chunk.tobytes())


def _write_parquet(path: str, array: np.ndarray, names: Sequence[str]) -> None:
    pyarrow = _pyarrow()
    dim = array.shape[1]
    schema = pyarrow.schema(
        [("path", pyarrow.string()), ("embedding", pyarrow.list_(pyarrow.float32(), dim))]
    )
    with pyarrow.parquet.ParquetWriter(path, schema) as writer:
        for start in range(0, array.shape[0], _CHUNK_ROWS):
            chunk = np.ascontiguousarray(array[start : start + _CHUNK_ROWS], dtype=np.float32)
            values = pyarrow.FixedSizeListArray.from_arrays(pyarrow.array(chunk.reshape(-1)), dim)
            paths = pyarrow.array(
                [
                    os.fsencode(n).decode("utf-8", "replace")
                    for n in names[start : start + _CHUNK_ROWS]
                ],
                pyarrow.string(),
            )
            writer.write_table(pyarrow.Table.from_arrays([paths, values], schema=schema))


def read_embeddings(path: Path) -> tuple[list[str], np.ndarray]:
    """Read an embedding file that ``embed`` wrote, in any of its formats.

    Args:
        path: A .npy (with its ``.paths.txt``), .safetensors, .csv, .jsonl or .parquet file.

    Returns:
        The paths of the rows and the rows (N, D), float32.

    Raises:
        ConfigError: For an unknown suffix.
        DataError: When the file is missing.
    """
    path = Path(path)
    suffix = check_output_path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist; check the path")
    if suffix == ".npy":
        array = np.load(path)
        listed = paths_file(path)
        names: list[str] = (
            listed.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
            if listed.exists()
            else []
        )
        return names, array
    if suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "np") as handle:
            names = json.loads((handle.metadata() or {}).get("paths", "[]"))
        return names, load_file(str(path))["embeddings"]
    if suffix == ".parquet":
        table = _pyarrow().parquet.read_table(path)
        dim = table.schema.field("embedding").type.list_size
        values = table.column("embedding").combine_chunks().flatten().to_numpy()
        return table.column("path").to_pylist(), values.reshape(-1, dim).astype(np.float32)
    rows: list[list[float]] = []
    names = []
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as stream:
        if suffix == ".csv":
            reader = csv.reader(stream)
            header = next(reader)
            for line in reader:
                names.append(line[0])
                rows.append([float(v) for v in line[1:]])
            dim = len(header) - 1
        else:
            for text in stream:
                document = json.loads(text)
                names.append(document["path"])
                rows.append(document["embedding"])
            dim = len(rows[0]) if rows else 0
    return names, np.asarray(rows, dtype=np.float32).reshape(len(names), dim)
