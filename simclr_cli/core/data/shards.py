"""WebDataset tar shards: finding them, indexing their members, the epoch order, and writing them.

A shard input is a brace pattern (``shards/train-{000000..000127}.tar``), a single ``.tar`` or a
folder of them (``is_shard_input``). Shards are read in place, never extracted: one pass over the
tar headers (``index_shards``, fast: it seeks over the data) gives every image member's offset and
size in flat arrays (``ShardIndex``), and the training decoder reads a member's bytes at its
offset. Members follow the WebDataset convention: the files of one sample share a key (the name
up to the first dot of its last part, ``cat/0001`` for ``cat/0001.jpg`` and ``cat/0001.cls``).

The order of an epoch (``ShardEpochSampler``) follows the seed: a seeded permutation of the
shards, their members concatenated in that order and cut into one contiguous share per rank (so
a rank reads about ``1/world`` of the shards), shuffled within windows of ``SHUFFLE_WINDOW``
members (a shuffle buffer whose draws are known in advance). The DataLoader deals the batches to
its workers in turn, so every image of an epoch is read once, by one worker of one rank, and an
exact mid-epoch resume only skips batches. ``write_shards`` (``simclr shard``) writes a folder
as shards with webdataset's ``ShardWriter``.
"""

from __future__ import annotations

import glob
import json
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, overload

import numpy as np
import torch

from .._io import parse_size
from ..config import ShardConfig
from ..errors import DataError
from ..progress import ProgressCallback, ProgressEvent, null_progress
from .checks import BadImage, describe_bad_images, looks_like_image, scan_images
from .files import IMAGE_SUFFIXES, ImageSource, find_images, find_labeled_images
from .sampler import _EPOCH_STRIDE, ResumableRandomSampler

#: Members of a rank's share shuffled together: the size of the (precomputed) shuffle buffer.
SHUFFLE_WINDOW = 4096
#: The file names ``write_shards`` gives its shards (``%06d`` is the shard's number).
SHARD_NAME = "shard-%06d.tar"
#: The class names beside the shards, in label order (a JSON list).
CLASSES_FILE = "classes.json"
#: Member extensions read as the sample's image (WebDataset's names for them).
IMAGE_EXTENSIONS = frozenset(suffix.lstrip(".") for suffix in IMAGE_SUFFIXES)
#: Member extensions read as the sample's class index.
CLASS_EXTENSIONS = ("cls", "class", "label")
#: What separates a shard's path from a member's name in ``str(member)``, ``a.tar:cat/1.jpg``.
MEMBER_SEPARATOR = ".tar:"

_BRACES = re.compile(r"\{[^{}]*(\.\.|,)[^{}]*\}")
_GLOB = re.compile(r"[*?\[]")


def is_shard_input(path_or_pattern: str | Path) -> bool:
    """Whether an input names tar shards rather than a folder or a file of images.

    True for a brace or glob pattern ending in ``.tar`` (``train-{000..127}.tar``), for any path
    ending in ``.tar`` (missing ones too, so that they get the shard messages), and for a folder
    whose top level holds ``.tar`` files and no image files or sub-folders.
    """
    text = str(path_or_pattern)
    if text.lower().endswith(".tar"):
        return True
    path = Path(text)
    if not path.is_dir():
        return False
    tars = False
    for entry in path.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.is_dir() or entry.suffix.lower() in IMAGE_SUFFIXES:
            return False
        tars = tars or entry.suffix.lower() == ".tar"
    return tars


def expand_shards(path_or_pattern: str | Path) -> tuple[list[Path], list[BadImage]]:
    """The shard files an input names, in order, and the named ones that are missing.

    Args:
        path_or_pattern: A brace pattern (``{000000..000127}``, ``{a,b}``), a glob pattern, a
            ``.tar`` file or a folder of them.

    Returns:
        The existing shard files and a ``BadImage`` for each named shard that does not exist.

    Raises:
        DataError: When the input matches no shard at all.
    """
    text = str(path_or_pattern)
    missing: list[BadImage] = []
    if _BRACES.search(text):
        import braceexpand  # A dependency of webdataset.

        named = [Path(item) for item in braceexpand.braceexpand(text)]
        found = [path for path in named if path.is_file()]
        missing = [BadImage(str(path), "shard not found") for path in named if not path.is_file()]
    elif _GLOB.search(text):
        found = sorted(Path(item) for item in glob.glob(text) if Path(item).is_file())
    elif Path(text).is_dir():
        entries = Path(text).iterdir()
        found = sorted(p for p in entries if p.suffix.lower() == ".tar" and p.is_file())
    else:
        found = [Path(text)] if Path(text).is_file() else []
    if not found:
        raise DataError(
            f"shard pattern {text} matches no file; check the folder and the numbers in braces "
            "(such as shards/shard-{000000..000009}.tar)"
        )
    return found, missing


@dataclass(frozen=True)
class ShardMember:
    """One image of a tar shard: where its bytes are.

    ``str()`` of it, ``shard.tar:cat/0001.jpg``, names it in messages and output files.
    """

    shard: str
    offset: int
    size: int
    name: str

    def read_bytes(self) -> bytes:
        """The member's encoded image, read at its offset in the shard."""
        with open(self.shard, "rb") as stream:
            stream.seek(self.offset)
            data = stream.read(self.size)
        if len(data) != self.size:
            raise OSError("the shard is truncated")
        return data

    def __str__(self) -> str:
        return f"{self.shard}:{self.name}"


class ShardIndex(Sequence[ShardMember]):
    """The image members of a list of shards, in flat arrays (no Python object per member).

    Loader workers share these arrays with the main process without copying them page by page,
    as a list of a million objects would be copied as its reference counts change.

    Args:
        shards: The shard files.
        shard_ids: int32 (N,), each member's position in ``shards``, non-decreasing.
        offsets: int64 (N,), where each member's data starts in its shard.
        sizes: int64 (N,), the members' sizes in bytes.
        names: The members' names inside their shards.
        labels: int64 (N,), the ``cls`` member of each sample, -1 where there is none.
    """

    def __init__(
        self,
        shards: Sequence[str],
        shard_ids: np.ndarray,
        offsets: np.ndarray,
        sizes: np.ndarray,
        names: Sequence[str],
        labels: np.ndarray,
    ):
        self.shards = list(shards)
        self.shard_ids = np.asarray(shard_ids, dtype=np.int32)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        encoded = [name.encode("utf-8", "surrogateescape") for name in names]
        self._name_bytes = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self._name_ends = np.cumsum([len(item) for item in encoded], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.offsets)

    @overload
    def __getitem__(self, index: int) -> ShardMember: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[ShardMember]: ...

    def __getitem__(self, index: int | slice) -> ShardMember | Sequence[ShardMember]:
        if isinstance(index, slice):
            return self.take(np.arange(len(self))[index])
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"member {index} of {len(self)}")
        return ShardMember(
            self.shards[int(self.shard_ids[index])],
            int(self.offsets[index]),
            int(self.sizes[index]),
            self.name(index),
        )

    def __iter__(self) -> Iterator[ShardMember]:
        for index in range(len(self)):
            yield self[index]

    def name(self, index: int) -> str:
        """The name of member ``index`` inside its shard (``cat/0001.jpg``)."""
        start = int(self._name_ends[index - 1]) if index else 0
        raw = self._name_bytes[start : int(self._name_ends[index])].tobytes()
        return raw.decode("utf-8", "surrogateescape")

    def counts(self) -> np.ndarray:
        """int64 (S,): image members per shard."""
        return np.bincount(self.shard_ids, minlength=len(self.shards)).astype(np.int64)

    def take(self, indices: Sequence[int] | np.ndarray) -> ShardIndex:
        """The members at ``indices``, in that order (sorted indices keep the shard order)."""
        chosen = np.asarray(indices, dtype=np.int64)
        return ShardIndex(
            self.shards,
            self.shard_ids[chosen],
            self.offsets[chosen],
            self.sizes[chosen],
            [self.name(int(i)) for i in chosen],
            self.labels[chosen],
        )


@dataclass
class _ShardEntries:
    """The image members of one shard, as ``index_shard`` found them."""

    offsets: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    bad: list[BadImage] = field(default_factory=list)


#: Shards indexed by this process, by (path, size, modification time): a shard is read once.
_INDEXED: dict[tuple[str, int, int], _ShardEntries] = {}


def split_key(name: str) -> tuple[str, str]:
    """WebDataset's split of a member name into sample key and extension.

    ``cat/0001.jpg`` gives ``("cat/0001", "jpg")``; ``a/b.seg.png`` gives ``("a/b", "seg.png")``.
    """
    folder, _, base = name.rpartition("/")
    stem, dot, extension = base.partition(".")
    prefix = folder + "/" if folder else ""
    return prefix + stem, extension if dot else ""


def index_shard(path: Path) -> _ShardEntries:
    """Read a shard's tar headers once: its image members and the samples it cannot use.

    The data is skipped by seeking, except the first 16 bytes of each image (checked to be an
    image) and the small ``cls`` members. A damaged or truncated shard keeps the samples before
    the damage; the rest is one ``BadImage``.
    """
    path = Path(path)
    try:
        status = path.stat()
    except OSError as error:
        return _ShardEntries(bad=[BadImage(str(path), error.strerror or "cannot be read")])
    key = (str(path), status.st_size, status.st_mtime_ns)
    if key not in _INDEXED:
        _INDEXED[key] = _read_shard(path, status.st_size)
    return _INDEXED[key]


def _read_shard(path: Path, file_size: int) -> _ShardEntries:
    entries = _ShardEntries()
    shard = str(path)
    try:
        with open(path, "rb") as stream, open(path, "rb") as data:
            _read_members(entries, shard, file_size, stream, data)
    except OSError as error:
        entries.bad.append(BadImage(shard, error.strerror or "cannot be read"))
    return entries


def _read_members(
    entries: _ShardEntries, shard: str, file_size: int, stream: BinaryIO, data: BinaryIO
) -> None:
    # `stream` is read by the tar module (headers); `data` seeks to the heads of the images.
    try:
        archive = tarfile.open(fileobj=stream, mode="r:")  # noqa: SIM115 - closed with `stream`.
    except (tarfile.TarError, EOFError) as error:
        entries.bad.append(BadImage(shard, f"not a readable tar file ({error})"))
        return
    sample: dict[str, tarfile.TarInfo] = {}
    current = None
    while True:
        try:
            info = archive.next()
        except (tarfile.TarError, OSError, EOFError):
            entries.bad.append(
                BadImage(shard, f"truncated or damaged tar after {len(entries.names)} images")
            )
            break
        if info is None:
            # A complete tar ends with zero blocks; anything else is a cut-off header.
            stream.seek(archive.offset)
            tail = stream.read(512)
            if len(tail) < 512 or tail.strip(b"\0"):
                reason = f"truncated tar after {len(entries.names)} images (no end-of-archive)"
                entries.bad.append(BadImage(shard, reason))
            break
        if not info.isfile():
            continue
        if info.offset_data + info.size > file_size:
            cut = BadImage(f"{shard}:{info.name}", "cut off: the shard is truncated")
            entries.bad.append(cut)
            break
        sample_key, extension = split_key(info.name)
        if sample_key != current and sample:
            _add_sample(entries, shard, current or "", sample, data)
            sample = {}
        current = sample_key
        sample[extension.lower()] = info
        # The tar module keeps every header it has read; this pass needs only the current one.
        archive.members = []  # type: ignore[attr-defined]
    if sample:
        _add_sample(entries, shard, current or "", sample, data)


def _add_sample(
    entries: _ShardEntries, shard: str, key: str, sample: dict[str, tarfile.TarInfo], data: BinaryIO
) -> None:
    image = next(
        (info for ext, info in sample.items() if ext.rpartition(".")[2] in IMAGE_EXTENSIONS),
        None,
    )
    if image is None:
        found = ", ".join("." + ext for ext in sorted(sample)) or "nothing"
        entries.bad.append(BadImage(f"{shard}:{key}", f"no image in this sample (found {found})"))
        return
    data.seek(image.offset_data)
    head = data.read(16)
    if not head:
        entries.bad.append(BadImage(f"{shard}:{image.name}", "empty member"))
        return
    if not looks_like_image(head):
        entries.bad.append(BadImage(f"{shard}:{image.name}", "not an image file"))
        return
    label = -1
    class_member = next((sample[ext] for ext in CLASS_EXTENSIONS if ext in sample), None)
    if class_member is not None:
        data.seek(class_member.offset_data)
        text = data.read(min(class_member.size, 64)).decode("utf-8", "replace").strip()
        if not text.isdigit():
            reason = f"its {class_member.name} is {text[:20]!r}, not a class index"
            entries.bad.append(BadImage(f"{shard}:{image.name}", reason))
            return
        label = int(text)
    entries.offsets.append(image.offset_data)
    entries.sizes.append(image.size)
    entries.names.append(image.name)
    entries.labels.append(label)


def member_from_name(name: str | Path) -> ShardMember | None:
    """The shard member that ``str(member)`` named (``/data/shard-000000.tar:cat/0001.jpg``).

    For names read back from an output (an index's paths, say): the shard's headers are read
    once per process (``index_shard``), not its data.

    Returns:
        The member; None when the name is no member's, the shard is missing, or it holds no
        image member of that name.
    """
    text = str(name)
    lowered = text.lower()
    found = lowered.find(MEMBER_SEPARATOR)
    while found >= 0:
        # The first ".tar:" that ends an existing file: a member's name may hold ".tar:" too.
        shard = text[: found + len(".tar")]
        if Path(shard).is_file():
            member = text[found + len(MEMBER_SEPARATOR) :]
            entries = index_shard(Path(shard))
            if member not in entries.names:
                return None
            position = entries.names.index(member)
            return ShardMember(shard, entries.offsets[position], entries.sizes[position], member)
        found = lowered.find(MEMBER_SEPARATOR, found + 1)
    return None


def source_of(name: str | Path) -> ImageSource:
    """What a name of ``embed``'s or ``index``'s output refers to: a shard member, else a file.

    The one reader of ``shard.tar:member`` names; thumbnails and search queries go through it.
    """
    if MEMBER_SEPARATOR in str(name).lower():
        member = member_from_name(name)
        if member is not None:
            return member
    return Path(name)


def index_shards(
    path_or_pattern: str | Path, *, progress: ProgressCallback = null_progress
) -> tuple[ShardIndex, list[BadImage]]:
    """Index the image members of the shards an input names.

    Args:
        path_or_pattern: What ``expand_shards`` takes.
        progress: Receives a ``shards`` task, one unit per shard.

    Returns:
        The usable image members, and the shards and members that are missing, damaged or not
        images (to be skipped and listed, or refused, like bad image files).

    Raises:
        DataError: When the input matches no shard or no shard holds a usable image.
    """
    paths, bad = expand_shards(path_or_pattern)
    shard_ids: list[np.ndarray] = []
    offsets: list[int] = []
    sizes: list[int] = []
    names: list[str] = []
    labels: list[int] = []
    progress(ProgressEvent("start", "shards", total=len(paths)))
    for number, path in enumerate(paths):
        entries = index_shard(path)
        shard_ids.append(np.full(len(entries.offsets), number, dtype=np.int32))
        offsets += entries.offsets
        sizes += entries.sizes
        names += entries.names
        labels += entries.labels
        bad += entries.bad
        progress(ProgressEvent("advance", "shards", total=len(paths), completed=number + 1))
    progress(ProgressEvent("end", "shards", total=len(paths), completed=len(paths)))
    if not offsets:
        raise DataError(
            f"the shards of {path_or_pattern} hold no readable image "
            f"({describe_bad_images(bad) or 'they are empty'}); check the files"
        )
    index = ShardIndex(
        [str(path) for path in paths],
        np.concatenate(shard_ids),
        np.asarray(offsets),
        np.asarray(sizes),
        names,
        np.asarray(labels),
    )
    return index, bad


def shard_labels(
    index: ShardIndex, path_or_pattern: str | Path, *, flag: str = "--train"
) -> tuple[list[int], list[str]]:
    """The class of every member: its ``cls`` member, else the first folder of its name.

    Class names of ``cls`` indices come from ``classes.json`` beside the shards (a JSON list in
    label order, as ``write_shards`` writes it), else they are the indices themselves.

    Raises:
        DataError: When a member has neither a ``cls`` member nor a folder.
    """
    if len(index) and bool((index.labels >= 0).all()):
        labels = index.labels.tolist()
        classes_path = Path(index.shards[0]).parent / CLASSES_FILE
        if classes_path.is_file():
            classes = _read_classes(classes_path)
            if max(labels) >= len(classes):
                raise DataError(
                    f"{flag} {path_or_pattern}: class index {max(labels)} is beyond the "
                    f"{len(classes)} names of {classes_path}; fix the file or remove it"
                )
        else:
            classes = [str(label) for label in range(max(labels) + 1)]
        return labels, classes
    folders = []
    for position in range(len(index)):
        name = index.name(position)
        if "/" not in name:
            raise DataError(
                f"{flag} {path_or_pattern}: member {name} has no cls member and is in no "
                "folder, so it has no class; write the shards with `simclr shard --labels`"
            )
        folders.append(name.split("/", 1)[0])
    classes = sorted(set(folders))
    number = {name: label for label, name in enumerate(classes)}
    return [number[name] for name in folders], classes


def _read_classes(path: Path) -> list[str]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read the class names in {path}: {error}") from None
    if isinstance(loaded, dict):
        loaded = loaded.get("classes", loaded)
    if isinstance(loaded, dict):  # {name: index}
        loaded = sorted(loaded, key=lambda name: loaded[name])
    if not isinstance(loaded, list):
        raise DataError(f"{path} must hold a JSON list of class names in label order")
    return [str(name) for name in loaded]


class ShardEpochSampler(ResumableRandomSampler):
    """The epoch order over shards: shards permuted by the seed, a contiguous share per rank.

    Members stay near their shard neighbours (a window of ``SHUFFLE_WINDOW``), so reads stream
    through a few shards at a time; every member of an epoch's shares is drawn exactly once.
    The order of epoch ``e`` depends on the seed, ``e`` and the rank only, as its parent's does,
    so an exact mid-epoch resume skips batches without reading them.

    Args:
        counts: Image members of each shard, in index order.
        seed: Seed of the run.
        rank: This process's rank.
        world_size: Number of ranks sharing each epoch.
        window: Members shuffled together.
    """

    def __init__(
        self,
        counts: Sequence[int] | np.ndarray,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        window: int = SHUFFLE_WINDOW,
    ):
        self.counts = np.asarray(counts, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.window = window
        super().__init__(int(self.counts.sum()), seed=seed, rank=rank, world_size=world_size)

    def shard_order(self, epoch: int) -> list[int]:
        """The shards of ``epoch`` in the order they are read (the same on every rank)."""
        generator = torch.Generator().manual_seed(self.seed * _EPOCH_STRIDE + epoch)
        return torch.randperm(len(self.counts), generator=generator).tolist()

    def order(self, epoch: int) -> list[int]:
        """This rank's share of ``epoch``: member positions in the order they are trained on."""
        starts, counts = self.starts, self.counts
        pieces = [np.arange(starts[s], starts[s] + counts[s]) for s in self.shard_order(epoch)]
        sequence = np.concatenate(pieces or [np.zeros(0, dtype=np.int64)])
        mine = sequence[self.rank * self.share : (self.rank + 1) * self.share]
        generator = np.random.default_rng([self.seed, epoch, self.rank])
        keys = np.arange(len(mine)) // self.window + generator.random(len(mine))
        return mine[np.argsort(keys, kind="stable")].tolist()


@dataclass
class ShardResult:
    """What ``write_shards`` wrote.

    Attributes:
        out: The folder of the shards.
        shards: The shard files, in order.
        images: Images written.
        classes: Class names in label order (empty without labels).
        bad_images: Files left out because they are not images.
        total_bytes: Bytes of the shards.
    """

    out: Path
    shards: list[Path]
    images: int
    classes: list[str]
    bad_images: list[BadImage]
    total_bytes: int

    @property
    def pattern(self) -> str:
        """The brace pattern of the shards, for ``simclr pretrain``."""
        last = max(0, len(self.shards) - 1)
        width = 6
        return str(self.out / f"shard-{{{0:0{width}d}..{last:0{width}d}}}.tar")


def write_shards(*, config: ShardConfig, progress: ProgressCallback = null_progress) -> ShardResult:
    """Write the images of a folder as WebDataset tar shards, with webdataset's ``ShardWriter``.

    Each image becomes a sample keyed by its path in the folder (``cat/0001`` for
    ``cat/0001.jpg``; the image member keeps its suffix); with ``labels`` the first folder is its
    class: a ``cls`` member holds the class index and ``classes.json`` the names. The images are
    written in a seeded random order, so that a shard mixes the classes. Nothing is overwritten.

    Args:
        config: The folder, the output folder, the shard size and the label switch.
        progress: Receives a ``shard`` task, one unit per image.

    Returns:
        The shards written.

    Raises:
        DataError: For a missing or empty folder, or an output folder that already has shards.
        ConfigError: For a bad shard size.
    """
    import webdataset  # Imported here: only this command writes shards.

    config.validate()
    max_size = parse_size(config.shard_size, flag="--shard-size")
    data, out = Path(config.data), Path(config.out)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a folder for the shards", flag="--out")
    if out.is_dir() and (any(out.glob("*.tar")) or (out / CLASSES_FILE).exists()):
        raise DataError(
            f"--out {out} already holds shards; shards are never overwritten: remove them or "
            "choose another folder",
            flag="--out",
        )
    if config.labels:
        paths, labels, classes = find_labeled_images(data)
    else:
        paths, labels, classes = find_images(data), [], []
    good, bad = scan_images(paths)
    if not good:
        raise DataError(
            f"none of the images in {data} can be read ({describe_bad_images(bad)}); "
            "check the files"
        )
    label_of = dict(zip(paths, labels, strict=False)) if labels else {}
    order = np.random.default_rng(config.seed).permutation(len(good))
    out.mkdir(parents=True, exist_ok=True)
    progress(ProgressEvent("start", "shard", total=len(good)))
    used: set[str] = set()
    written = 0
    with webdataset.ShardWriter(
        str(out / SHARD_NAME), maxcount=10**9, maxsize=max_size, verbose=0, encoder=False
    ) as writer:
        for position in order.tolist():
            path = good[position]
            try:
                payload = path.read_bytes()
            except OSError as error:
                bad.append(BadImage(str(path), error.strerror or "cannot be read"))
                continue
            key = _sample_key(path, data, used)
            sample: dict[str, object] = {"__key__": key, path.suffix.lower().lstrip("."): payload}
            if config.labels:
                sample["cls"] = str(label_of[path]).encode()
            writer.write(sample)
            written += 1
            progress(ProgressEvent("advance", "shard", total=len(good), completed=written))
    progress(ProgressEvent("end", "shard", total=len(good), completed=written))
    if config.labels:
        (out / CLASSES_FILE).write_text(json.dumps(classes, ensure_ascii=False) + "\n")
    shards = sorted(out.glob("shard-*.tar"))
    return ShardResult(
        out=out,
        shards=shards,
        images=written,
        classes=classes,
        bad_images=bad,
        total_bytes=sum(shard.stat().st_size for shard in shards),
    )


def _sample_key(path: Path, root: Path, used: set[str]) -> str:
    # The key is the path without its suffix; dots would end the key early, so they become _.
    relative = path.relative_to(root)
    parts = [*relative.parts[:-1], relative.stem.replace(".", "_")]
    key = "/".join(parts)
    base, number = key, 1
    while key in used:  # cat/a.jpg and cat/a.png would share a key.
        key = f"{base}_{number}"
        number += 1
    used.add(key)
    return key
