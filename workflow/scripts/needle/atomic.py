"""Atomic file writes (torch-free, so that table and figure stages use them without torch).

Every file the pipeline declares is written to a temporary name in the same folder and renamed: a
rename within one file system is atomic, so a killed job never leaves a truncated file under a name
that Snakemake (or a user) would trust. A full disk ends the write with one line naming the file,
and the temporary is removed, so nothing half-written stays behind under any name.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from needle.errors import NeedleError

_FULL = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
}


def remove_stale_temporaries(path: str | os.PathLike) -> None:
    """Delete the temporaries that killed writes of ``path`` left beside it (SIGKILL skips the
    cleanup below), so reruns do not pile them up. Each output has one writer at a time."""
    path = Path(path)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)


def _disk_full(error: BaseException | None) -> OSError | None:
    """The full-disk OSError behind ``error``, if any: writers such as torch's zip writer raise
    their own error while cleaning up after the OSError, which then is only its context."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in _FULL:
            return error
        error = error.__cause__ or error.__context__
    return None


@contextlib.contextmanager
def _full_disk_named(path: Path) -> Iterator[None]:
    try:
        yield
    except Exception as error:
        full = _disk_full(error)
        if full is None:
            raise
        raise NeedleError(
            f"{_FULL[full.errno]}: {path} (free some space and rerun; finished work is kept)"
        ) from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, else remove it."""
    path = Path(path)
    with _full_disk_named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        temporary = Path(name)
        try:
            # mkstemp creates 0600 files; give the result the permissions open() would (umask).
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temporary, 0o666 & ~umask)
            yield temporary
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
