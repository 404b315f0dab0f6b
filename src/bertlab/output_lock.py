"""One writer per output: an exclusive lock on a file beside the output, held while it is written.

Run folders (run_folder.hold_run_folder), a predict's --out and an export folder (`claimed_output`) are all
claimed this way before any work starts. A second writer is refused at once, naming the process that holds
the output; the OS releases the lock of a killed holder, so a dead writer never blocks the next one, and
that next writer removes the hidden temporary files the dead one left (atomic_write.temporary_path).
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bertlab.atomic_write import stale_temporaries
from bertlab.errors import BertlabError

log = logging.getLogger(__name__)


class OutputBusy(Exception):
    """Another process holds the output; `holder` says which ("process N on HOST")."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


@dataclass
class _Hold:
    descriptor: int
    created: Path | None  # the highest folder the hold created for its lock file (removed on release)
    count: int = 1  # holds taken in this process (a launcher's guard, then the run): released at 0


_holds: dict[Path, _Hold] = {}  # lock files this process holds


@atexit.register
def _release_all() -> None:
    """A process that ends without releasing (a failed sweep, an exception) leaves no lock file."""
    for path, hold in list(_holds.items()):
        hold.count = 1
        _release_lock(path)


def lock_file_of(output: Path) -> Path:
    """The output's lock, beside it: taken before the output itself exists."""
    output = Path(os.path.abspath(output))  # `..` resolved: one output, one lock, however it is spelled
    return output.parent / f".{output.name}.lock"


def hold_output(output: Path) -> None:
    """Make this process the one writer of `output` until `release_output` or its exit.

    An exclusive `flock` on the lock file beside `output`, whose content names the holder. Raises
    `OutputBusy` when another process holds it, OSError when the lock file cannot be created (a read-only
    folder). Holding the output again in the same process counts: each hold is ended by one release.
    """
    path = lock_file_of(output)
    if path in _holds:
        _holds[path].count += 1
        return
    created = None
    folder = path.parent
    while not folder.exists():
        created, folder = folder, folder.parent
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)  # again if a releasing writer just removed it
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            if not path.parent.is_dir():
                continue  # a releasing writer removed the folder it had made for its lock: make it again
            _remove_created(path.parent, created)
            raise  # a folder that takes no new files (/proc)
        except OSError:
            _remove_created(path.parent, created)
            raise
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(descriptor)
            raise OutputBusy(holder) from None
        except OSError as error:  # a file system without flock (some Lustre, NFS or FUSE mounts)
            log.warning(
                "The file system of %s cannot lock files (%s): two writers of %s are not kept apart",
                path.parent,
                error.strerror,
                output,
            )
            break
        try:
            same_file = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:  # else its holder removed it as we opened it: lock the new one
            break
        os.close(descriptor)
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    _holds[path] = _Hold(descriptor, created)


def release_output(output: Path) -> None:
    """End one hold on `output`; the last one removes the lock file and the folders made only for it."""
    _release_lock(lock_file_of(output))


def _release_lock(path: Path) -> None:
    hold = _holds.get(path)
    if hold is None:
        return
    hold.count -= 1
    if hold.count > 0:
        return
    del _holds[path]
    path.unlink(missing_ok=True)  # while still locked: a waiting writer then locks a new file
    os.close(hold.descriptor)
    _remove_created(path.parent, hold.created)


def _remove_created(folder: Path, created: Path | None) -> None:
    """Remove the empty folders from `folder` up to `created`, the highest one a hold made."""
    if created is None:
        return
    while folder != created.parent and folder.is_dir() and not any(folder.iterdir()):
        try:
            folder.rmdir()
        except OSError:  # another writer has just put its lock there
            break
        folder = folder.parent


def remove_stale_temporaries(output: Path) -> list[Path]:
    """Remove the hidden temporary files (or folders) a killed writer of `output` left; the caller holds it."""
    removed = []
    for temporary in stale_temporaries(output):
        if temporary.is_dir() and not temporary.is_symlink():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)
        removed.append(temporary)
    if removed:
        log.info(
            "Removed %d temporary file(s) of an earlier writer of %s that did not finish",
            len(removed),
            output,
        )
    return removed


@contextmanager
def claimed_output(output: Path, key: str, overwrite: bool = False, folder: bool = False) -> Iterator[Path]:
    """Hold `output` (a file, or a `folder`) for this command while the block writes it; refusals name `key`.

    Checked under the hold, so that two commands racing for one new output cannot both pass: another
    writer holds it, it exists (unless `overwrite`; an empty folder counts as absent), or its folder cannot
    be written. Temporary files a killed writer left are removed first. Nothing is created on refusal.
    """
    output = Path(output)
    if folder and output.exists() and not output.is_dir():
        raise BertlabError(f"{str(output)!r} is a file; give a folder", key)
    if not folder and output.is_dir():
        raise BertlabError(f"{str(output)!r} is a folder; give a file name", key)
    try:
        hold_output(output)
    except OutputBusy as busy:
        raise BertlabError(
            f"{str(output)!r} is being written by another command ({busy.holder}); nothing was changed. Wait "
            f"for it to end, or choose another {key}",
            key,
        ) from None
    except OSError as error:
        place = lock_file_of(output).parent
        raise BertlabError(
            f"cannot write into {str(place)!r} ({error.strerror}); choose a {key} in a writable folder", key
        ) from None
    try:
        exists = output.exists() and (not folder or any(output.iterdir()))
        if exists and not overwrite:
            what = "exists and is not empty" if folder else "exists"
            raise BertlabError(
                f"{str(output)!r} {what}; choose another {'folder' if folder else 'file'}, or --overwrite to "
                f"replace it (it is replaced only when the new one is complete)",
                key,
            )
        remove_stale_temporaries(output)
        yield output
    finally:
        release_output(output)
