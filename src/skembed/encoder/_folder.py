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
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from ._pooling import POOLING_MODES

__all__ = [
    "DenseSpec",
    "FolderSpec",
    "NormalizeSpec",
    "PoolingSpec",
    "check_model_config",
    "read_folder",
    "write_folder_configs",
]


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
class NormalizeSpec:
    """L2 normalisation of the sentence embedding (no parameters)."""


Step = PoolingSpec | DenseSpec | NormalizeSpec


@dataclass(frozen=True)
class FolderSpec:
    """Everything the encoder needs to know about a model folder."""

    transformer_path: Path
    max_seq_length: int | None = None
    do_lower_case: bool = False
    # The modules after the transformer, in order.
    steps: tuple[Step, ...] = (PoolingSpec(),)
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str | None = None
    # Embedding columns kept after the last module (Matryoshka models); None keeps all.
    truncate_dim: int | None = None

    @property
    def pooling(self) -> PoolingSpec:
        """The pooling step."""
        return next(step for step in self.steps if isinstance(step, PoolingSpec))


# Upper bound on any size read from a config: far above every real model, low enough that a
# hostile value is refused before anything is allocated.
MAX_CONFIG_SIZE = 1 << 20

_REQUIRED = object()

_JSON_TYPES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "null",
}


def _json_type(value: Any) -> str:
    return next((name for kind, name in _JSON_TYPES.items() if type(value) is kind), "a value")


def _read_json(path: Path, expected: type = dict) -> Any:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, expected):
        raise ValueError(f"{path} holds {_json_type(data)}; expected {_JSON_TYPES[expected]}.")
    return data


def _field(
    config: dict[str, Any], path: Path, key: str, kinds: tuple[type, ...], default: Any = _REQUIRED
) -> Any:
    """``config[key]``, checked to be of one of the JSON ``kinds``; ``default`` when absent."""
    if key not in config:
        if default is _REQUIRED:
            raise ValueError(f"{path}: field {key!r} is missing.")
        return default
    value = config[key]
    # bool is an int subclass in Python, but never a size or an index in a config.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(_JSON_TYPES[kind] for kind in kinds)
        raise ValueError(
            f"{path}: field {key!r} is {value!r} ({_json_type(value)}); expected {expected}."
        )
    return value


def _size_field(config: dict[str, Any], path: Path, key: str, default: Any = _REQUIRED) -> Any:
    """A positive integer field within :data:`MAX_CONFIG_SIZE` (or null when the default is)."""
    kinds = (int,) if default is _REQUIRED or default is not None else (int, type(None))
    value = _field(config, path, key, kinds, default)
    if value is not None and not 1 <= value <= MAX_CONFIG_SIZE:
        raise ValueError(
            f"{path}: field {key!r} is {value}; expected an integer from 1 to {MAX_CONFIG_SIZE}."
        )
    return value


def _string_map(config: dict[str, Any], path: Path, key: str) -> dict[str, str]:
    value = _field(config, path, key, (dict, type(None)), None) or {}
    bad = {k: v for k, v in value.items() if not isinstance(v, str)}
    if bad:
        raise ValueError(f"{path}: field {key!r} must map names to strings; got {bad!r}.")
    return dict(value)


def _module_kind(type_name: str) -> str:
    # Saves name the same module by several import paths across reference versions
    # ("sentence_transformers.models.Pooling", "...sentence_transformer.modules.pooling.Pooling").
    return type_name.rsplit(".", 1)[-1]


def _module_folder(root: Path, relative: str, where: str) -> Path:
    """The folder of a module, refused unless it lies inside the model folder ``root``."""
    parts = PurePosixPath(relative.replace("\\", "/"))
    if parts.is_absolute() or ".." in parts.parts or PureWindowsPath(relative).drive:
        raise ValueError(
            f"{where}: path {relative!r} must be relative and inside the model folder "
            "(no '..', no absolute path)."
        )
    folder = root / parts
    resolved, inside = folder.resolve(), root.resolve()
    if resolved != inside and inside not in resolved.parents:
        raise ValueError(
            f"{where}: path {relative!r} leads to {resolved}, outside the model folder {inside} "
            "(through a symbolic link); only files inside the model folder are loaded."
        )
    return folder


def read_pooling(folder: Path) -> PoolingSpec:
    """Read a pooling config, old (boolean keys) or new (``pooling_mode``) style.

    Keys that older files lack take their defaults; no active mode means mean.
    """
    config_path = folder / "config.json"
    config = _read_json(config_path) if config_path.is_file() else {}
    mode = _field(config, config_path, "pooling_mode", (str, list, type(None)), None)
    if mode is None:
        modes = tuple(
            name
            for key, name in _LEGACY_POOLING_KEYS.items()
            if _field(config, config_path, key, (bool,), False)
        )
    else:
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    modes = modes or ("mean",)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown:
        raise ValueError(
            f"{config_path}: unknown pooling mode(s) {unknown}; "
            f"expected any of {list(POOLING_MODES)}."
        )
    return PoolingSpec(
        modes=modes, include_prompt=_field(config, config_path, "include_prompt", (bool,), True)
    )


def _read_dense(folder: Path) -> DenseSpec:
    path = folder / "config.json"
    config = _read_json(path)
    return DenseSpec(
        path=folder,
        in_features=_size_field(config, path, "in_features"),
        out_features=_size_field(config, path, "out_features"),
        bias=_field(config, path, "bias", (bool,), True),
        activation=_field(config, path, "activation_function", (str, type(None)), None)
        or "torch.nn.modules.linear.Identity",
        use_residual=_field(config, path, "use_residual", (bool,), False),
    )


def _read_modules(path: Path, modules_path: Path) -> tuple[Path, tuple[Step, ...]]:
    """The transformer folder and the steps after it, from ``modules.json``."""
    modules = _read_json(modules_path, list)
    entries = []
    for position, module in enumerate(modules):
        where = f"{modules_path}: module {position}"
        if not isinstance(module, dict):
            raise ValueError(f"{where} is {_json_type(module)}; expected an object.")
        entries.append(
            (
                _field(module, modules_path, "idx", (int,)),
                _field(module, modules_path, "type", (str,)),
                _module_folder(path, _field(module, modules_path, "path", (str,), ""), where),
            )
        )
    indices = [idx for idx, _, _ in entries]
    if not entries or len(set(indices)) != len(indices):
        raise ValueError(
            f"{modules_path}: expected a non-empty list of modules with distinct 'idx' values, "
            f"got idx {indices}."
        )
    transformer_path = path
    steps: list[Step] = []
    for position, (_, type_name, module_dir) in enumerate(sorted(entries, key=lambda e: e[0])):
        kind = _module_kind(type_name)
        if kind == "Transformer" and position == 0:
            transformer_path = module_dir
        elif kind == "Pooling":
            steps.append(read_pooling(module_dir))
        elif kind == "Dense":
            steps.append(_read_dense(module_dir))
        elif kind == "Normalize":
            # Normalize has no parameters; its folder is often missing.
            steps.append(NormalizeSpec())
        else:
            raise ValueError(
                f"{modules_path}: module {type_name!r} at position {position} is not "
                "supported; skembed runs Transformer (first), then Pooling, Dense and "
                "Normalize."
            )
    if not any(isinstance(step, PoolingSpec) for step in steps):
        raise ValueError(f"{modules_path} has no Pooling module after the Transformer.")
    return transformer_path, tuple(steps)


def read_folder(path: Path) -> FolderSpec:
    """Read the model folder at ``path``.

    Every module folder must lie inside ``path`` (symbolic links resolved), and
    every field of the config files is checked before anything is loaded.

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
        If a config file is malformed (the message names the file and the
        field), a module lies outside the folder, or a module is one skembed
        cannot run.
    """
    modules_path = path / "modules.json"
    if modules_path.is_file():
        transformer_path, steps = _read_modules(path, modules_path)
    else:
        transformer_path, steps = path, (PoolingSpec(),)

    sbert_path = transformer_path / "sentence_bert_config.json"
    sbert = _read_json(sbert_path) if sbert_path.is_file() else {}
    st_path = path / "config_sentence_transformers.json"
    st_config = _read_json(st_path) if st_path.is_file() else {}
    return FolderSpec(
        transformer_path=transformer_path,
        max_seq_length=_size_field(sbert, sbert_path, "max_seq_length", None),
        do_lower_case=_field(sbert, sbert_path, "do_lower_case", (bool,), False),
        steps=steps,
        prompts=_string_map(st_config, st_path, "prompts"),
        default_prompt_name=_field(
            st_config, st_path, "default_prompt_name", (str, type(None)), None
        ),
        similarity_fn_name=_field(
            st_config, st_path, "similarity_fn_name", (str, type(None)), None
        ),
        truncate_dim=_size_field(st_config, st_path, "truncate_dim", None),
    )


# Size fields of a Hugging Face config.json, under the names different architectures use.
_LAYERS = ("num_hidden_layers", "num_layers", "n_layer")
_HIDDEN = ("hidden_size", "d_model", "n_embd", "dim")
_INTERMEDIATE = ("intermediate_size", "d_ff", "n_inner", "hidden_dim")
_VOCABULARY = ("vocab_size",)
_POSITIONS = ("max_position_embeddings", "n_positions")
# Weights files hold at least this many bytes per parameter (4-bit quantisation is half a byte).
_MIN_BYTES_PER_PARAMETER = 0.5
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")


def check_model_config(folder: Path) -> None:
    """Refuse a transformer config whose sizes the weights on disk cannot back.

    Every size field must be an integer from 1 to :data:`MAX_CONFIG_SIZE`, and
    the parameter count the config implies (layers, hidden and intermediate
    sizes, vocabulary and positions) must fit in the weight files: a config
    that declares a million layers is refused here instead of hanging while
    the model is built.

    Parameters
    ----------
    folder : Path
        The transformer's folder (holding ``config.json`` and the weights).

    Raises
    ------
    ValueError
        Naming the file and the field.
    """
    path = folder / "config.json"
    if not path.is_file():
        return
    config = _read_json(path)
    sizes = {}
    for names in (_LAYERS, _HIDDEN, _INTERMEDIATE, _VOCABULARY, _POSITIONS):
        present = [name for name in names if config.get(name) is not None]
        for name in present:
            _size_field(config, path, name)
        sizes[names] = config[present[0]] if present else 0
    hidden = sizes[_HIDDEN]
    parameters = (
        sizes[_LAYERS] * (4 * hidden * hidden + 2 * hidden * sizes[_INTERMEDIATE])
        + (sizes[_VOCABULARY] + sizes[_POSITIONS]) * hidden
    )
    weight_bytes = sum(
        p.stat().st_size for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file()
    )
    if weight_bytes and parameters * _MIN_BYTES_PER_PARAMETER > weight_bytes:
        fields = {names[0]: size for names, size in sizes.items()}
        raise ValueError(
            f"{path}: the sizes {fields} describe about {parameters:,} parameters, but the "
            f"weight files in {folder} hold only {weight_bytes:,} bytes; the config does not "
            "match its weights."
        )


def write_folder_configs(
    spec: FolderSpec,
    path: Path,
    *,
    hidden_size: int,
    max_seq_length: int,
    similarity_fn_name: str,
    versions: dict[str, str],
    truncate_dim: int | None = None,
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
        elif isinstance(step, NormalizeSpec):
            folder, kind, config = f"{idx}_Normalize", "Normalize", {}
        else:
            raise TypeError(f"Unknown module step {step!r}.")
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
    st_config: dict[str, Any] = {
        "__version__": versions,
        "prompts": spec.prompts,
        "default_prompt_name": spec.default_prompt_name,
        "similarity_fn_name": similarity_fn_name,
    }
    if truncate_dim is not None:
        st_config["truncate_dim"] = truncate_dim
    _write_json(path / "config_sentence_transformers.json", st_config)
    return folders


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
