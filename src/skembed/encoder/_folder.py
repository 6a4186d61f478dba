"""Read and write the sentence-transformers model-folder format.

A folder holds ``modules.json`` (the module pipeline), ``sentence_bert_config.json``
(``max_seq_length``, ``do_lower_case``), one subfolder per pooling / dense module,
``config_sentence_transformers.json`` (prompts, ``similarity_fn_name``) and the
Hugging Face config, tokenizer and weights. A plain Hugging Face checkpoint with
no ``modules.json`` reads as Transformer + mean pooling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "POOLING_MODES",
    "DenseSpec",
    "FolderSpec",
    "PoolingSpec",
    "read_folder",
    "write_folder_configs",
]

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")

# Legacy boolean keys of 1_Pooling/config.json, in the order the reference concatenates them.
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


@dataclass(frozen=True)
class PoolingSpec:
    """How token embeddings become one sentence embedding."""

    modes: tuple[str, ...] = ("mean",)
    include_prompt: bool = True


@dataclass(frozen=True)
class DenseSpec:
    """A linear layer (plus activation) applied to the sentence embedding."""

    path: Path
    in_features: int
    out_features: int
    bias: bool = True
    activation: str = "torch.nn.modules.activation.Tanh"
    use_residual: bool = False


@dataclass(frozen=True)
class FolderSpec:
    """Everything the encoder needs to know about a model folder."""

    transformer_path: Path
    max_seq_length: int | None = None
    do_lower_case: bool = False
    # The modules after the transformer, in order: PoolingSpec, DenseSpec or "normalize".
    steps: tuple[PoolingSpec | DenseSpec | str, ...] = (PoolingSpec(),)
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str | None = None

    @property
    def pooling(self) -> PoolingSpec:
        """The pooling step."""
        return next(step for step in self.steps if isinstance(step, PoolingSpec))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc


def _module_kind(type_name: str) -> str:
    # Saves name the same module by several import paths across reference versions
    # ("sentence_transformers.models.Pooling", "...sentence_transformer.modules.pooling.Pooling").
    return type_name.rsplit(".", 1)[-1]


def read_pooling(folder: Path) -> PoolingSpec:
    """Read a pooling config, old (boolean keys) or new (``pooling_mode``) style.

    Keys that older files lack take their defaults; no active mode means mean.
    """
    config_path = folder / "config.json"
    config = _read_json(config_path) if config_path.is_file() else {}
    mode = config.get("pooling_mode")
    if mode is None:
        modes = tuple(name for key, name in _LEGACY_POOLING_KEYS.items() if config.get(key))
    else:
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    modes = modes or ("mean",)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown:
        raise ValueError(
            f"{config_path}: unknown pooling mode(s) {unknown}; "
            f"expected any of {list(POOLING_MODES)}."
        )
    return PoolingSpec(modes=modes, include_prompt=bool(config.get("include_prompt", True)))


def _read_dense(folder: Path) -> DenseSpec:
    config = _read_json(folder / "config.json")
    return DenseSpec(
        path=folder,
        in_features=int(config["in_features"]),
        out_features=int(config["out_features"]),
        bias=bool(config.get("bias", True)),
        activation=config.get("activation_function") or "torch.nn.modules.linear.Identity",
        use_residual=bool(config.get("use_residual", False)),
    )


def read_folder(path: Path) -> FolderSpec:
    """Read the model folder at ``path``.

    Parameters
    ----------
    path : Path
        A sentence-transformers model folder or a plain Hugging Face checkpoint.

    Returns
    -------
    FolderSpec

    Raises
    ------
    ValueError
        If a config file is malformed or names a module skembed cannot run.
    """
    modules_path = path / "modules.json"
    transformer_path = path
    steps: list[PoolingSpec | DenseSpec | str] = []
    if modules_path.is_file():
        modules = sorted(
            json.loads(modules_path.read_text(encoding="utf-8")), key=lambda m: m["idx"]
        )
        for position, module in enumerate(modules):
            kind = _module_kind(module["type"])
            module_dir = path / module.get("path", "")
            if kind == "Transformer" and position == 0:
                transformer_path = module_dir
            elif kind == "Pooling":
                steps.append(read_pooling(module_dir))
            elif kind == "Dense":
                steps.append(_read_dense(module_dir))
            elif kind == "Normalize":
                # Normalize has no parameters; its folder is often missing.
                steps.append("normalize")
            else:
                raise ValueError(
                    f"{modules_path}: module {module['type']!r} at position {position} is not "
                    "supported; skembed runs Transformer (first), then Pooling, Dense and "
                    "Normalize."
                )
        if not any(isinstance(step, PoolingSpec) for step in steps):
            raise ValueError(f"{modules_path} has no Pooling module after the Transformer.")
    else:
        steps.append(PoolingSpec())

    sbert_path = transformer_path / "sentence_bert_config.json"
    sbert = _read_json(sbert_path) if sbert_path.is_file() else {}
    st_path = path / "config_sentence_transformers.json"
    st_config = _read_json(st_path) if st_path.is_file() else {}
    return FolderSpec(
        transformer_path=transformer_path,
        max_seq_length=sbert.get("max_seq_length"),
        do_lower_case=bool(sbert.get("do_lower_case", False)),
        steps=tuple(steps),
        prompts=dict(st_config.get("prompts") or {}),
        default_prompt_name=st_config.get("default_prompt_name"),
        similarity_fn_name=st_config.get("similarity_fn_name"),
    )


def write_folder_configs(
    spec: FolderSpec,
    path: Path,
    *,
    hidden_size: int,
    max_seq_length: int,
    similarity_fn_name: str,
    versions: dict[str, str],
) -> list[Path]:
    """Write the sentence-transformers config files of ``spec`` into ``path``.

    The transformer's own files (Hugging Face config, tokenizer, weights) and
    the dense weights are written by the caller. Files use the legacy key names
    that every sentence-transformers release reads.

    Returns
    -------
    list of Path
        The folder of each step of ``spec.steps``, in order.
    """
    modules: list[dict[str, Any]] = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
    ]
    folders = []
    for idx, step in enumerate(spec.steps, start=1):
        if isinstance(step, PoolingSpec):
            folder, kind = f"{idx}_Pooling", "Pooling"
            config: dict[str, Any] = {"word_embedding_dimension": hidden_size}
            config.update({key: name in step.modes for key, name in _LEGACY_POOLING_KEYS.items()})
            config["include_prompt"] = step.include_prompt
        elif isinstance(step, DenseSpec):
            folder, kind = f"{idx}_Dense", "Dense"
            config = {
                "in_features": step.in_features,
                "out_features": step.out_features,
                "bias": step.bias,
                "activation_function": step.activation,
            }
            if step.use_residual:
                config["use_residual"] = True
        else:
            folder, kind, config = f"{idx}_Normalize", "Normalize", {}
        modules.append(
            {
                "idx": idx,
                "name": str(idx),
                "path": folder,
                "type": f"sentence_transformers.models.{kind}",
            }
        )
        (path / folder).mkdir(parents=True, exist_ok=True)
        folders.append(path / folder)
        if config:
            _write_json(path / folder / "config.json", config)
    _write_json(path / "modules.json", modules)
    _write_json(
        path / "sentence_bert_config.json",
        {"max_seq_length": max_seq_length, "do_lower_case": spec.do_lower_case},
    )
    _write_json(
        path / "config_sentence_transformers.json",
        {
            "__version__": versions,
            "prompts": spec.prompts,
            "default_prompt_name": spec.default_prompt_name,
            "similarity_fn_name": similarity_fn_name,
        },
    )
    return folders


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
