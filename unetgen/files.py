"""Writing files atomically: a failed or interrupted write never leaves a half-written file or damages an old one.

A target that is not a regular file (``/dev/null``, ``/dev/stdout``, a named pipe) is written into directly:
nothing there to protect, and moving a file onto it would replace the device itself.

Every file unetgen writes goes through here: one file through :func:`atomic_write` (checkpoints, images, drawings),
several that belong together through :func:`staging` (an ONNX model and its external weights, checked before they
replace anything).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from .errors import UNetGenError


@contextlib.contextmanager
def _temporary_beside(path: Path) -> Iterator[tuple[BinaryIO, str]]:
    """A new temporary file in ``path``'s folder, removed if the block fails."""
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


def _special(path: Path) -> bool:
    """Whether ``path`` exists and is neither a regular file nor a folder (a device, a named pipe, a socket)."""
    try:
        return not (path.is_file() or path.is_dir()) and path.exists()
    except OSError:
        return False


def _fsync_and_replace(source: str | Path, target: Path) -> None:
    """Flush ``source`` to disk, give it the mode ``target`` has (or a new file would have), move it onto ``target``
    (or copy it into ``target``, a device or pipe)."""
    if _special(target):
        with open(source, "rb") as data, open(target, "wb") as out:
            shutil.copyfileobj(data, out)
        os.unlink(source)
        return
    with open(source, "rb+") as handle:
        os.fsync(handle.fileno())
    os.chmod(source, _new_file_mode(target))
    os.replace(source, target)


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
        if _special(path):
            if not os.access(path, os.W_OK):
                raise UNetGenError(f"{path}: is not writable; choose another file")
            return path
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise UNetGenError(f"{path}: folder {path.parent} is not writable; choose another folder")
    except (OSError, ValueError) as exc:  # a name too long, or with a NUL byte
        reason = getattr(exc, "strerror", None) or exc
        raise UNetGenError(f"{str(path)[:200]!r}: cannot write there: {reason}") from None
    return path


@contextlib.contextmanager
def writing(path: Path, error: type[UNetGenError] = UNetGenError) -> Iterator[None]:
    """Turn a failed write (no permission, a read-only file system, a full disk) into one line: the old file at
    ``path`` is intact.

    Args:
        path: the file being written, for the message.
        error: the error class to raise (a subclass of :class:`~unetgen.errors.UNetGenError`).

    Raises:
        UNetGenError: ``error``, for any ``OSError`` in the block.
    """
    try:
        yield
    except OSError as exc:
        raise error(f"{path}: cannot write: {exc.strerror or exc}; the file was not changed") from None


def atomic_write(
    path: str | Path, write: Callable[[BinaryIO], None], *, error: type[UNetGenError] = UNetGenError
) -> Path:
    """Write a file through ``write(handle)``, then move it into place in one step.

    The data goes to a temporary file in the same folder, is flushed to disk, and replaces ``path`` with
    ``os.replace``; if ``write`` raises (or the process is interrupted), the temporary file is removed and any
    existing file at ``path`` is untouched.

    Args:
        path: the file to write.
        write: called with a binary file handle.
        error: the error class for a failed write (default :class:`~unetgen.errors.UNetGenError`).

    Returns:
        The path written.

    Raises:
        UNetGenError: when the folder does not exist or is not writable, or the write fails for want of space,
            permission or the like (any ``OSError``, from the file system or from ``write``).
    """
    path = check_target(path)
    if _special(path):
        with writing(path, error), open(path, "wb") as handle:
            write(handle)  # type: ignore[arg-type]
        return path
    with writing(path, error), _temporary_beside(path) as (handle, name):
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.chmod(name, _new_file_mode(path))
        os.replace(name, path)
    return path


class Staging:
    """A private folder beside a target where files are written, and checked, before they replace anything.

    Attributes:
        target: the main file the staged files are for (named in messages).
        folder: the private folder (removed when :func:`staging` ends).
        error: the error class for a failed write.
    """

    def __init__(self, target: Path, folder: Path, error: type[UNetGenError]) -> None:
        """Args:
        target: the main file.
        folder: the private folder, already made.
        error: the error class for a failed write.
        """
        self.target = target
        self.folder = folder
        self.error = error

    def path(self, name: str) -> Path:
        """Where to write the staged file ``name``."""
        return self.folder / name

    def commit(self, moves: Sequence[tuple[str, Path]]) -> None:
        """Move staged files into place, in order, each flushed to disk and moved with one ``os.replace``.

        Put the file that refers to the others last (an ONNX model after its weights, under new names): an
        interruption then leaves the old file pointing at its own data, or the new one at the new data.

        Args:
            moves: ``(staged name, destination)`` pairs, destinations in the target's folder.

        Raises:
            UNetGenError: ``error``, when a move fails (the target is then as it was, or the new file complete).
        """
        with writing(self.target, self.error):
            for name, destination in moves:
                _fsync_and_replace(self.folder / name, destination)


@contextlib.contextmanager
def staging(target: str | Path, error: type[UNetGenError] = UNetGenError) -> Iterator[Staging]:
    """A private folder beside ``target`` for files until they are committed; removed in any case.

    Args:
        target: the main file to be written (its folder must be writable: see :func:`check_target`).
        error: the error class for a failed write.

    Yields:
        The :class:`Staging`; write into ``stage.path(name)`` inside :func:`writing`, then ``stage.commit``.

    Raises:
        UNetGenError: ``error``, when the folder cannot be made.
    """
    target = check_target(target)
    with writing(target, error):
        beside = None if _special(target) else target.parent  # not a folder in /dev for /dev/null
        folder = Path(tempfile.mkdtemp(dir=beside, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield Staging(target, folder, error)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


__all__ = ["check_target", "writing", "atomic_write", "Staging", "staging"]
