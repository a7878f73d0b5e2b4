"""Typed errors of the core.

Every error a user can cause is one of these classes. Messages say what is wrong and how to fix
it, in one line, so that the command line can print them as they are. The CLI maps them to a red
line on stderr and an exit code: ``exit_code`` is 1 for bad input and 2 for bad usage. An error
about the value of one flag names it in ``flag`` (``raise ConfigError(..., flag="--image-size")``),
so that the CLI can add where that value came from (a config file key or an environment variable).
"""

from __future__ import annotations

import os


class SimCLRError(Exception):
    """Base class of every error caused by the user's input or environment.

    Args:
        message: What is wrong and how to fix it, in one line.
        flag: The long flag whose value is wrong (``"--image-size"``), if the error is about one.

    Attributes:
        exit_code: The exit code of the command line: 1 for bad input, 2 for bad usage.
        flag: The long flag whose value is wrong, or ``None`` when the error is about no single
            flag.
    """

    exit_code: int = 1
    flag: str | None = None

    def __init__(self, message: str = "", *, flag: str | None = None) -> None:
        super().__init__(message)
        if flag is not None:
            self.flag = flag


class UsageError(SimCLRError):
    """Flags or settings that contradict each other or cannot work (exit code 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """An impossible setting, such as a negative image size or an unknown choice."""


class DataError(SimCLRError):
    """A missing or empty folder, a folder without images, or an image that cannot be read."""


class ImageDecodeError(DataError):
    """One file that cannot be decoded as an image.

    Args:
        path: The file.
        reason: Why, in a short phrase (see ``data/checks.py: classify_decode_failure``).
        fix: What to do about that kind of file; a generic hint when not given.
        kind: The kind of failure (``truncated``, ``too_many_pixels``...), when known.
    """

    def __init__(
        self, path: object, reason: str, *, fix: str | None = None, kind: str = ""
    ) -> None:
        self.path = path
        self.reason = reason
        self.fix = fix or "remove the file or save it again as JPEG or PNG"
        self.kind = kind
        # File names that are not UTF-8 are shown with \xNN escapes, so that they can be printed.
        shown = os.fsencode(str(path)).decode("utf-8", "backslashreplace")
        super().__init__(f"cannot read image {shown}: {reason}; {self.fix}")


class BackboneError(SimCLRError):
    """An unknown timm model name or weights that do not fit the model."""


class ModelFileError(SimCLRError):
    """A model file that is missing, not safetensors, or lacks simclr metadata."""


class RunFolderError(SimCLRError):
    """A run folder that would be overwritten or cannot be written."""


class CheckpointError(RunFolderError):
    """A checkpoint that cannot be read or does not fit the run being resumed."""


class DiskFullError(RunFolderError):
    """The disk filled up while a file was written; the previous version of the file is kept."""


class RunInterrupted(SimCLRError):
    """A run stopped by SIGINT or SIGTERM after saving a checkpoint; ``--resume`` continues it.

    Attributes:
        signal_number: The signal received; the exit code is 128 plus it (130 or 143).
        step: The step the checkpoint holds.
        checkpoint: The checkpoint file.
    """

    def __init__(self, message: str, *, signal_number: int, step: int, checkpoint: object):
        super().__init__(message)
        self.signal_number = signal_number
        self.step = step
        self.checkpoint = checkpoint
        self.exit_code = 128 + signal_number


class TrainingDivergedError(SimCLRError):
    """The loss or the gradients stayed non-finite for several steps in a row."""


class DistributedError(SimCLRError):
    """A rank of a multi-process run failed; the message is that rank's, the job was stopped."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class DisplayError(SimCLRError):
    """A terminal that cannot show the output, such as one too narrow for a row of images."""


class ExportError(SimCLRError):
    """A model that the chosen export format cannot represent, or an export that fails its check."""


class MissingDependencyError(SimCLRError):
    """An optional dependency that a feature needs is not installed; the message names the extra."""


class SearchIndexError(SimCLRError):
    """An index folder that is missing, damaged or empty, or was made by another model."""
