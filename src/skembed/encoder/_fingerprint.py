"""The fingerprint of a model folder: a hash of every file the loader can open."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from ._config import read_json_or_none
from .modules import module_class

__all__ = ["folder_fingerprint"]


def named_module_folders(path: Path) -> list[Path]:
    """The module folders that ``modules.json`` and the modules' configs name, whatever their names.

    A module folder may be hidden (``".2_Dense"``). Entries are not checked here
    (:func:`~skembed.encoder._folder.read_folder` refuses malformed ones before
    anything loads); those that cannot be read are skipped.
    """
    entries = read_json_or_none(path / "modules.json")
    named: list[Path] = []
    for entry in entries if isinstance(entries, list) else []:
        relative = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(relative, str) or not relative or Path(relative).is_absolute():
            continue
        folder = path / relative
        named.append(folder)
        type_name = entry.get("type")
        kind = module_class(type_name) if isinstance(type_name, str) else None
        if kind is not None:
            named += kind.named_folders(folder)
    return named


def _model_files(folder: Path) -> list[tuple[str, Path]]:
    """Every file a model folder can load from, by relative name.

    Hidden entries (``.git``, ``.cache``) are left out, except the module folders that
    ``modules.json`` or a module's config names: the loader opens those whatever their
    names. Links are followed: file links anywhere (the Hugging Face cache links every
    file to a blob), folder links that stay inside the model folder (the reader refuses
    modules outside it, so nothing is loaded from beyond).
    """
    root = folder.resolve()
    files: dict[str, Path] = {}
    seen: set[Path] = set()

    def walk(start: Path) -> None:
        for dirpath, dirs, names in os.walk(start, followlinks=True):
            here = Path(dirpath)
            target = here.resolve()
            if target in seen or (target != root and root not in target.parents):
                dirs[:] = []  # a loop of links, a folder seen under another name, or outside
                continue
            seen.add(target)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                file = here / name
                if not name.startswith(".") and file.is_file():
                    files.setdefault(file.relative_to(folder).as_posix(), file)

    walk(folder)
    for module_folder in named_module_folders(folder):
        if module_folder.is_dir():
            walk(module_folder)
    return sorted(files.items())


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
