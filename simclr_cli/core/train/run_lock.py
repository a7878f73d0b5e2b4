"""The lock of a run folder: one process writes it at a time.

An exclusive ``flock`` on ``RUN/.lock``: a second run on the same folder is refused with one line
naming the first (pid, host, since when). The kernel drops the lock of a process that dies,
however it dies, so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from datetime import datetime
from pathlib import Path

from ..errors import RunFolderError

#: Locked (``flock``) while a process writes the folder; says which process that is.
LOCK_FILE = ".lock"

#: How flock says that another open file holds the lock.
_BUSY = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES)
#: How flock says that the file system has no locks (some network mounts): the run goes on.
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


class RunLock:
    """An exclusive ``flock`` on ``RUN/.lock``, held by the process that writes the folder.

    The file records who holds it (pid, host, since when) for the message that refuses a second
    process. ``release`` removes it; a process that dies leaves the file but not the lock.

    Args:
        folder: The run folder (it must exist).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._descriptor: int | None = None

    def acquire(self) -> None:
        """Take the lock and record this process in the file.

        Raises:
            RunFolderError: When another process holds the lock, or the file cannot be opened.
        """
        # A holder removes the file as it lets go: a lock taken on the file it removed guards
        # nothing, so the lock counts only when the path still names the locked file.
        for _ in range(10):
            try:
                descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise RunFolderError(
                    f"cannot write run folder {self.folder} ({error.strerror})"
                ) from None
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                holder = _read_holder(descriptor)
                os.close(descriptor)
                if error.errno in _NO_LOCKS:
                    return
                if error.errno in _BUSY:
                    raise RunFolderError(busy_message(self.folder, holder)) from None
                raise RunFolderError(
                    f"cannot lock run folder {self.folder} ({error.strerror})"
                ) from None
            if _names(self.path, descriptor):
                break
            os.close(descriptor)
        else:
            raise RunFolderError(f"cannot lock run folder {self.folder}; try again")
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now().astimezone().isoformat(sep=" ", timespec="seconds"),
        }
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (json.dumps(record) + "\n").encode(), 0)
        self._descriptor = descriptor

    def release(self) -> None:
        """Remove the file and let go of the lock (nothing happens when it is not held)."""
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is None:
            return
        try:
            if _names(self.path, descriptor):
                self.path.unlink()
        finally:
            os.close(descriptor)


def lock_holder(folder: Path) -> str | None:
    """Who holds the lock of ``folder`` (as in ``busy_message``), or None; creates nothing."""
    try:
        descriptor = os.open(Path(folder) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        return _read_holder(descriptor) if error.errno in _BUSY else None
    else:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return None
    finally:
        os.close(descriptor)


def busy_message(folder: Path, holder: str) -> str:
    """The one line that refuses a run folder another process is writing."""
    return (
        f"run folder {folder} is being written by {holder}; wait for that run to end, or "
        "choose another --out"
    )


def _read_holder(descriptor: int) -> str:
    try:
        record = json.loads(os.pread(descriptor, 4096, 0).decode())
        return f"pid {int(record['pid'])} on {record['host']} since {record['since']}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        # The holder has not written its record yet.
        return "another process"


def _names(path: Path, descriptor: int) -> bool:
    """Whether ``path`` still names the file open as ``descriptor``."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(descriptor))
    except OSError:
        return False
