"""Labelled image folders for evaluation: checked class lists and seeded per-class splits.

Evaluation reads labels from class sub-folders (``train/cat/*.jpg``), or from tar shards: each
sample's ``cls`` member (named by ``classes.json``) or the first folder of its name. Everything
here is deterministic for a given seed, so that two runs of ``probe`` or ``finetune`` see the
same images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.checks import BadImage, describe_bad_images
from ..data.files import ImageSource, _walk_images, find_labeled_images
from ..data.shards import ShardIndex, index_shards, is_shard_input, shard_labels
from ..errors import DataError
from ..progress import ProgressCallback, ProgressEvent


@dataclass
class LabeledImages:
    """Image paths (or shard members) with integer labels into ``classes``.

    ``bad`` lists the shards and members skipped as missing, damaged or not images.
    """

    paths: Sequence[ImageSource]
    labels: list[int]
    classes: list[str]
    bad: list[BadImage] = field(default_factory=list)

    def subset(self, indices: np.ndarray | list[int]) -> LabeledImages:
        """The images at ``indices``, in that order, with the same class list."""
        paths: Sequence[ImageSource]
        if isinstance(self.paths, ShardIndex):
            paths = self.paths.take(indices)
        else:
            paths = [self.paths[i] for i in indices]
        return LabeledImages(paths, [self.labels[i] for i in indices], self.classes, self.bad)


def find_classified_images(root: Path, *, flag: str = "--train") -> LabeledImages:
    """List a class-folder dataset and refuse folders that cannot train a classifier.

    Args:
        root: A folder with one sub-folder of images per class, or tar shards (labels from
            their ``cls`` members or the first folder of the member names).
        flag: The option the folder came from, for the messages.

    Returns:
        The images with their labels and sorted class names.

    Raises:
        DataError: When a class folder holds no image or there are fewer than two classes.
    """
    bad: list[BadImage] = []
    paths: Sequence[ImageSource]
    if is_shard_input(root):
        paths, bad = index_shards(root)
        labels, classes = shard_labels(paths, root, flag=flag)
    else:
        root = Path(root)
        paths, labels, classes = find_labeled_images(root)
        empty = [name for name in classes if not any(_walk_images(root / name))]
        if empty:
            raise DataError(
                f"{flag} {root}: class folder {empty[0]!r} holds no images; add images or remove it"
            )
    if len(classes) < 2:
        raise DataError(
            f"{flag} {root} has a single class ({classes[0]!r}); a classifier needs at least two "
            "class sub-folders"
        )
    return LabeledImages(paths, labels, classes, bad)


def report_skipped_members(*splits: LabeledImages, progress: ProgressCallback, task: str) -> None:
    """One line about the shards and members the splits skipped (damaged, or not images)."""
    bad = {item.path: item for split in splits for item in split.bad}
    if bad:
        text = (
            f"{len(bad)} shards or members skipped as unreadable: "
            f"{describe_bad_images(list(bad.values()))}"
        )
        progress(ProgressEvent("message", task, text=text))


def check_same_classes(train: LabeledImages, val: LabeledImages, *, val_dir: Path) -> None:
    """Refuse a validation folder whose classes are not those of the training folder.

    Raises:
        DataError: Naming the first classes that are missing on either side.
    """
    if train.classes == val.classes:
        return
    only_train = sorted(set(train.classes) - set(val.classes))
    only_val = sorted(set(val.classes) - set(train.classes))
    parts = []
    if only_train:
        parts.append(f"missing {', '.join(only_train[:3])}")
    if only_val:
        parts.append(f"extra {', '.join(only_val[:3])}")
    raise DataError(
        f"--val {val_dir} has other classes than --train ({'; '.join(parts)}); give both "
        "folders the same class sub-folders",
        flag="--val",
    )


def split_per_class(
    labels: list[int] | np.ndarray, *, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices per class: ``fraction`` of each class (at least one image) goes to the
    second part.

    Args:
        labels: (N,) integer labels.
        fraction: Share of each class held out, in (0, 1).
        seed: Seed of the shuffle.

    Returns:
        Sorted kept indices and sorted held-out indices.

    Raises:
        DataError: When a class has a single image and cannot be split.
    """
    labels = np.asarray(labels)
    generator = np.random.default_rng(seed)
    kept, held = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < 2:
            raise DataError(
                f"class {int(label)} has a single image and cannot be split; give a --val folder "
                "or add images"
            )
        members = generator.permutation(members)
        count = min(len(members) - 1, max(1, round(fraction * len(members))))
        held.append(members[:count])
        kept.append(members[count:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def label_fraction_subset(
    labels: list[int] | np.ndarray, *, fraction: float, seed: int
) -> np.ndarray:
    """A class-balanced, seeded subset of labelled images (SimCLR's semi-supervised protocol).

    Keeps ``round(fraction * n_c)`` images of each class c, at least one, chosen at random with
    ``seed``; the same seed always keeps the same images.

    Args:
        labels: (N,) integer labels.
        fraction: Share of labels kept, in (0, 1].
        seed: Seed of the choice.

    Returns:
        Sorted indices of the kept images.
    """
    labels = np.asarray(labels)
    if fraction >= 1.0:
        return np.arange(len(labels))
    generator = np.random.default_rng(seed)
    kept = []
    for label in np.unique(labels):
        members = generator.permutation(np.flatnonzero(labels == label))
        kept.append(members[: max(1, round(fraction * len(members)))])
    return np.sort(np.concatenate(kept))


def load_train_val(
    train_dir: Path, val_dir: Path | None, *, val_fraction: float, seed: int
) -> tuple[LabeledImages, LabeledImages]:
    """The training and validation images of an evaluation, checked.

    Without ``val_dir``, ``val_fraction`` of each class of ``train_dir`` is held out with ``seed``.

    Raises:
        DataError: For empty classes, a single class, or classes that differ between folders.
    """
    train = find_classified_images(train_dir, flag="--train")
    if val_dir is not None:
        val = find_classified_images(val_dir, flag="--val")
        check_same_classes(train, val, val_dir=Path(val_dir))
        return train, val
    kept, held = split_per_class(train.labels, fraction=val_fraction, seed=seed)
    return train.subset(kept), train.subset(held)
