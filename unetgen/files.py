"""Writing files atomically: a failed or interrupted write never leaves a half-written file or damages an old one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import UNetGenError


@contextlib.contextmanager
def _temporary_beside(path: Path) -> Iterator[tuple[BinaryIO, str]]:
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        yield handle, handle.name
    except BaseException:
        handle.close()
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise


def _new_file_mode(path: Path) -> int:
    """The existing file's mode, or what ``open()`` would give a new file (0666 less the umask)."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def check_target(path: str | Path) -> Path:
    """Check, before any work is done, that ``path`` can be written: its folder exists and is writable, and it is
    not a folder itself.

    Args:
        path: the file to be written.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        UNetGenError: when it cannot be written.
    """
    path = Path(path)
    if "\x00" in str(path):
        raise UNetGenError(f"{str(path)[:200]!r}: a file name cannot contain a NUL byte")
    try:
        if not path.parent.is_dir():
            raise UNetGenError(f"{path}: folder {path.parent} does not exist; create it first")
        if path.is_dir():
            raise UNetGenError(f"{path}: is a directory; give a file name")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise UNetGenError(f"{path}: folder {path.parent} is not writable; choose another folder")
    except (OSError, ValueError) as exc:  # a name too long, or with a NUL byte
        reason = getattr(exc, "strerror", None) or exc
        raise UNetGenError(f"{str(path)[:200]!r}: cannot write there: {reason}") from None
    return path


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file through ``write(handle)``, then move it into place in one step.

    The data goes to a temporary file in the same folder, is flushed to disk, and replaces ``path`` with
    ``os.replace``; if ``write`` raises (or the process is interrupted), the temporary file is removed and any
    existing file at ``path`` is untouched.

    Args:
        path: the file to write.
        write: called with a binary file handle.

    Returns:
        The path written.

    Raises:
        UNetGenError: when the folder does not exist or is not writable, or the write fails for want of space,
            permission or the like (any ``OSError``, from the file system or from ``write``).
    """
    path = check_target(path)
    try:
        with _temporary_beside(path) as (handle, name):
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            os.chmod(name, _new_file_mode(path))
            os.replace(name, path)
    except OSError as exc:  # no permission, a read-only file system, a full disk: the old file is intact
        raise UNetGenError(f"{path}: cannot write: {exc.strerror or exc}; the file was not changed") from None
    return path
