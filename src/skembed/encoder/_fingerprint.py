"""The fingerprint of a model folder: a hash of every file the loader can open."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

__all__ = ["folder_fingerprint"]


def _model_files(folder: Path) -> list[tuple[str, Path]]:
    """The files a model folder can load from, by relative name, hidden entries left out.

    File links are followed (the Hugging Face cache links every file to a blob); linked
    folders are not, since :func:`read_folder` refuses modules outside the folder.
    """
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(root, name)
            if not name.startswith(".") and path.is_file():
                files.append((path.relative_to(folder).as_posix(), path))
    return files


def _file_stats(files: list[tuple[str, Path]]) -> tuple:
    # Inode and change time catch a rewrite of the same size within the clock's resolution.
    return tuple(
        (name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        for name, st in ((name, path.stat()) for name, path in files)
    )


# Per folder: the file stats the last hash was taken at, and that hash.
_FINGERPRINTS: dict[str, tuple[tuple, str]] = {}
_FINGERPRINTS_LOCK = threading.Lock()


def folder_fingerprint(folder: Path) -> str:
    """Return a SHA-256 over the names and contents of the files of a model folder.

    The hash is taken again whenever a file's size, times or inode change, so a
    folder rewritten in place gets a new fingerprint; otherwise a process
    hashes a folder once.

    Raises
    ------
    OSError
        If the files keep changing while they are hashed.
    """
    for _ in range(3):
        files = _model_files(folder)
        stats = _file_stats(files)
        with _FINGERPRINTS_LOCK:
            known = _FINGERPRINTS.get(str(folder))
        if known is not None and known[0] == stats:
            return known[1]
        digest = hashlib.sha256()
        for name, path in files:
            digest.update(name.encode() + b"\0")
            with open(path, "rb") as f:
                for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                    digest.update(chunk)
        # A writer that was busy while we read leaves different stats: hash again.
        if _file_stats(files) == stats and [n for n, _ in _model_files(folder)] == [
            n for n, _ in files
        ]:
            with _FINGERPRINTS_LOCK:
                _FINGERPRINTS[str(folder)] = (stats, digest.hexdigest())
            return digest.hexdigest()
    raise OSError(f"The files of the model folder {folder} kept changing while being read.")
