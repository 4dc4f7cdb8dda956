"""Private files for the embedded mode: the data folder 0700, the database and secrets 0600.

The SQLite file, its -wal and -shm (SQLite gives them the database file's mode), and the
privacy key hold bodies, numbers and signing secrets: nobody but the owner reads them,
whatever the umask. An existing folder or file we own is tightened, never loosened.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

FOLDER_MODE = 0o700
FILE_MODE = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def _tighten(path: Path, mode: int) -> None:
    try:
        found = path.stat()
    except FileNotFoundError:
        return
    if found.st_uid == os.getuid() and stat.S_IMODE(found.st_mode) & ~mode:
        os.chmod(path, stat.S_IMODE(found.st_mode) & mode)


def private_folder(path: Path) -> Path:
    """`path` created (with its parents) and kept at 0700 (the parents as the umask says)."""
    path.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
    _tighten(path, FOLDER_MODE)
    return path


def private_file(path: Path) -> Path:
    """`path` created empty at 0600 if missing, tightened to 0600 if it exists."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    _tighten(path, FILE_MODE)
    return path


def private_sqlite_file(database: Path) -> None:
    """The SQLite file at 0600 before SQLite opens it (an empty file is an empty database);
    a -wal, -shm or -journal left by an older version is tightened too."""
    private_file(database)
    for suffix in SQLITE_COMPANIONS:
        _tighten(database.with_name(database.name + suffix), FILE_MODE)
