"""A model folder written by this process, carried by value: its files travel in a pickle."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ._fingerprint import folder_fingerprint

__all__ = ["FolderSnapshot"]


class FolderSnapshot:
    """A model folder that lives as long as this object, and pickles with its files.

    A fine-tuned model exists nowhere but in the process that trained it. The
    snapshot keeps it in a temporary folder (removed when the snapshot is
    garbage collected); pickled, it carries the bytes of every file, and
    unpickled it writes them to a new temporary folder and checks them against
    the fingerprint they were saved with, so a changed file is refused rather
    than encoded under the old identity.

    Parameters
    ----------
    write : callable
        Called with an empty folder; writes the model into it.

    Attributes
    ----------
    folder : Path
        The folder holding the model.
    fingerprint : str
        :func:`folder_fingerprint` of the folder.
    """

    def __init__(self, write: Any) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="skembed-model-")
        self.folder = Path(self._tmp.name)
        write(self.folder)
        self.fingerprint = folder_fingerprint(self.folder)

    def files(self) -> dict[str, bytes]:
        """The folder's files by relative path (checked against the fingerprint first).

        Raises
        ------
        ValueError
            If the folder's files changed since they were written.
        """
        self._check()
        out = {}
        for root, _, names in os.walk(self.folder):
            for name in names:
                path = Path(root) / name
                out[path.relative_to(self.folder).as_posix()] = path.read_bytes()
        return out

    def _check(self) -> None:
        found = folder_fingerprint(self.folder)
        if found != self.fingerprint:
            raise ValueError(
                f"The model files in {self.folder} have fingerprint {found[:12]}, not "
                f"{self.fingerprint[:12]} as when they were written: they were changed. Fit "
                "the estimator again."
            )

    def __getstate__(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "files": self.files()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="skembed-model-")
        self.folder = Path(self._tmp.name)
        for name, data in state["files"].items():
            path = self.folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        self.fingerprint = state["fingerprint"]
        self._check()

    def __deepcopy__(self, memo: dict[int, Any]) -> FolderSnapshot:
        # Its files never change: copies share them (and the folder's lifetime).
        return self
