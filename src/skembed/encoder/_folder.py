"""Read and write the sentence-transformers model-folder format.

A folder holds ``modules.json`` (the module pipeline, one subfolder per module
after the first), ``config_sentence_transformers.json`` (prompts,
``similarity_fn_name``, ``truncate_dim``) and what each module writes for itself
(see :mod:`skembed.encoder.modules`). A plain Hugging Face checkpoint with no
``modules.json`` reads as Transformer + mean pooling.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ._config import field as config_field
from ._config import json_type, module_folder, read_json, size_field, string_map, write_json
from .modules import (
    LoadContext,
    Module,
    Normalize,
    Pipeline,
    Pooling,
    Transformer,
    save_pipeline,
    write_modules_json,
)
from .modules import load_pipeline as _load_pipeline

__all__ = ["FolderSpec", "read_folder", "save_folder"]


@dataclass(frozen=True, eq=False)
class FolderSpec:
    """A model folder: its module pipeline and the settings saved beside it.

    Parameters
    ----------
    pipeline : Pipeline
        The modules, an input module (Transformer, StaticEmbedding, Router) first.
    path : Path
        The folder it was read from.
    prompts : dict of str to str
    default_prompt_name : str, optional
    similarity_fn_name : str, optional
    truncate_dim : int, optional
        Embedding columns kept after the last module (Matryoshka models).
    """

    pipeline: Pipeline
    path: Path
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str | None = None
    truncate_dim: int | None = None

    @property
    def input_module(self) -> Module:
        """The first module."""
        return self.pipeline.input_module

    @property
    def input_folder(self) -> Path:
        """The folder of the input module (where a transformer's token limit is saved)."""
        return getattr(self.input_module, "folder", self.path)

    @property
    def pooling(self) -> Pooling | None:
        """The top-level Pooling module, if the pipeline has one."""
        return next((m for m in self.pipeline if isinstance(m, Pooling)), None)

    def updated(
        self,
        *,
        max_seq_length: int | None = None,
        normalize: bool = False,
        prompt: str | None = None,
        prompts: dict[str, str] | None = None,
        similarity_fn_name: str | None = None,
        truncate_dim: int | None = None,
    ) -> FolderSpec:
        """The spec to save: the token limit, a final Normalize, prompts and settings applied.

        Parameters
        ----------
        max_seq_length : int, optional
            The input module's token limit (for a Router: every route's, unless it
            is the Router's own limit).
        normalize : bool, default=False
            Append a Normalize module unless the pipeline already ends with one.
        prompt : str, optional
            Saved as the default prompt ``"skembed"``.
        prompts : dict of str to str, optional
            Saved with the model's prompts, replacing those of the same names.
        similarity_fn_name : str, optional
        truncate_dim : int, optional
        """
        modules = [self.input_module.with_max_seq_length(max_seq_length), *list(self.pipeline)[1:]]
        if normalize and not isinstance(modules[-1], Normalize):
            modules.append(Normalize(modules[-1].output_dimension))
        new_prompts = {**self.prompts, **(prompts or {})}
        default_prompt_name = self.default_prompt_name
        if prompt is not None:
            new_prompts, default_prompt_name = {**new_prompts, "skembed": prompt}, "skembed"
        return replace(
            self,
            pipeline=Pipeline(*modules),
            prompts=new_prompts,
            default_prompt_name=default_prompt_name,
            similarity_fn_name=similarity_fn_name or self.similarity_fn_name,
            truncate_dim=truncate_dim,
        )


def _read_modules(path: Path, modules_path: Path, context: LoadContext) -> Pipeline:
    """The module pipeline of ``modules.json``."""
    modules = read_json(modules_path, list)
    entries = []
    for position, module in enumerate(modules):
        where = f"{modules_path}: module {position}"
        if not isinstance(module, dict):
            raise ValueError(f"{where} is {json_type(module)}; expected an object.")
        entries.append(
            (
                config_field(module, modules_path, "idx", (int,)),
                config_field(module, modules_path, "type", (str,)),
                module_folder(path, config_field(module, modules_path, "path", (str,), ""), where),
            )
        )
    indices = [idx for idx, _, _ in entries]
    if not entries or len(set(indices)) != len(indices):
        raise ValueError(
            f"{modules_path}: expected a non-empty list of modules with distinct 'idx' values, "
            f"got idx {indices}."
        )
    ordered = [(type_name, folder) for _, type_name, folder in sorted(entries, key=lambda e: e[0])]
    return _load_pipeline(ordered, modules_path, context)


def read_folder(
    path: Path,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
) -> FolderSpec:
    """Read the model folder at ``path`` and load its modules.

    Every module folder must lie inside ``path`` (symbolic links resolved), the
    settings and the order of the modules are checked before any module is
    loaded, and each module's config before its weights.

    Parameters
    ----------
    path : Path
        A sentence-transformers model folder or a plain Hugging Face checkpoint.
    device : torch.device, optional
        Where the modules run; default the CPU.
    dtype : torch.dtype, default=torch.float32
        Precision of the transformer; other modules run in float32.
    trust_remote_code : bool, default=False

    Returns
    -------
    FolderSpec

    Raises
    ------
    ValueError
        If a config file is malformed (the message names the file and the
        field), a module lies outside the folder, or a module is one skembed
        cannot run.
    """
    st_path = path / "config_sentence_transformers.json"
    st_config = read_json(st_path) if st_path.is_file() else {}
    settings: dict[str, Any] = {
        "prompts": string_map(st_config, st_path, "prompts"),
        "default_prompt_name": config_field(
            st_config, st_path, "default_prompt_name", (str, type(None)), None
        ),
        "similarity_fn_name": config_field(
            st_config, st_path, "similarity_fn_name", (str, type(None)), None
        ),
        "truncate_dim": size_field(st_config, st_path, "truncate_dim", None),
    }
    context = LoadContext(device or torch.device("cpu"), dtype, trust_remote_code)
    modules_path = path / "modules.json"
    if modules_path.is_file():
        pipeline = _read_modules(path, modules_path, context)
    else:
        transformer = Transformer.load(path, context)
        pipeline = Pipeline(transformer, Pooling(transformer.output_dimension)).eval()
    return FolderSpec(pipeline=pipeline, path=path, **settings)


def save_folder(path: Path, spec: FolderSpec) -> None:
    """Write ``spec`` as a sentence-transformers folder: each module, ``modules.json``, settings.

    Files use the key names that every sentence-transformers release reads.
    """
    import transformers

    path.mkdir(parents=True, exist_ok=True)
    write_modules_json(path, save_pipeline(list(spec.pipeline), path))
    st_config: dict[str, Any] = {
        "__version__": {
            "skembed": _skembed_version(),
            "transformers": transformers.__version__,
            "pytorch": torch.__version__,
        },
        "prompts": spec.prompts,
        "default_prompt_name": spec.default_prompt_name,
        "similarity_fn_name": spec.similarity_fn_name,
    }
    if spec.truncate_dim is not None:
        st_config["truncate_dim"] = spec.truncate_dim
    write_json(path / "config_sentence_transformers.json", st_config)


def _skembed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("skembed")
    except PackageNotFoundError:
        return "unknown"
