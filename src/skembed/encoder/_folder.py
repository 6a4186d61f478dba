"""Read and write the sentence-transformers model-folder format.

A folder holds ``modules.json`` (the module pipeline), ``sentence_bert_config.json``
(``max_seq_length``, ``do_lower_case``), one subfolder per module after the first,
``config_sentence_transformers.json`` (prompts, ``similarity_fn_name``) and the
Hugging Face config, tokenizer and weights. A plain Hugging Face checkpoint with
no ``modules.json`` reads as Transformer + mean pooling.

The first module is the input module: a Transformer, a StaticEmbedding (a token
embedding table averaged per text) or a Router, whose ``router_config.json`` names one
pipeline per route (e.g. "query" and "document"), each with an input module of its own.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from ._pooling import POOLING_MODES

__all__ = [
    "DenseSpec",
    "DropoutSpec",
    "FolderSpec",
    "LayerNormSpec",
    "NormalizeSpec",
    "PoolingSpec",
    "RouterSpec",
    "StaticEmbeddingSpec",
    "WeightedLayerPoolingSpec",
    "check_model_config",
    "named_module_folders",
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


@dataclass(frozen=True)
class LayerNormSpec:
    """A layer normalisation of the sentence embedding, with learned scale and shift."""

    path: Path
    dimension: int


@dataclass(frozen=True)
class DropoutSpec:
    """Dropout on the sentence embedding: the identity at inference, kept to be saved back."""

    rate: float = 0.2


@dataclass(frozen=True)
class WeightedLayerPoolingSpec:
    """Token embeddings as a learned weighted mean of the transformer's hidden layers."""

    path: Path
    dimension: int
    num_hidden_layers: int
    layer_start: int


@dataclass(frozen=True)
class StaticEmbeddingSpec:
    """An input module without a transformer: the mean of per-token embeddings.

    ``path`` holds ``tokenizer.json`` and the embedding table (``embedding.weight``, or a
    model2vec ``embeddings`` table with an optional ``mapping`` and per-token ``weights``).
    """

    path: Path


Step = (
    PoolingSpec | DenseSpec | NormalizeSpec | LayerNormSpec | DropoutSpec | WeightedLayerPoolingSpec
)
# Steps that act on the sentence embedding; the others act on token embeddings.
SENTENCE_STEPS = (DenseSpec, NormalizeSpec, LayerNormSpec, DropoutSpec)


@dataclass(frozen=True)
class RouterSpec:
    """One module pipeline per route, picked by task ("query", "document", ...).

    ``routes`` maps each route name to the pipeline of that route (a :class:`FolderSpec`
    without prompts or metric); ``task_routes`` maps a task to a route where the
    folder's ``route_mappings`` say so for text.
    """

    routes: dict[str, FolderSpec]
    default_route: str | None = None
    task_routes: dict[str | None, str] = field(default_factory=dict)

    def route_for(self, task: str | None) -> str:
        """The route that encodes texts of ``task`` (``None``: no task given).

        The order of the reference library for text inputs: a mapping of the task,
        a catch-all mapping, a route named after the task, a route named "text",
        then the default route.

        Raises
        ------
        ValueError
            If no route takes ``task``.
        """
        for key in (task, None):
            if key in self.task_routes:
                return self.task_routes[key]
        if task is not None and task in self.routes:
            return task
        if "text" in self.routes:
            return "text"
        if task is None and self.default_route is not None:
            return self.default_route
        raise ValueError(
            f"No route of the model's Router takes task={task!r}; its routes are "
            f"{sorted(self.routes)} (default {self.default_route!r})."
        )


@dataclass(frozen=True)
class FolderSpec:
    """Everything the encoder needs to know about a model folder."""

    # The folder of the input module (the transformer, the static embedding or the router).
    transformer_path: Path
    max_seq_length: int | None = None
    do_lower_case: bool = False
    # The modules after the input module, in order.
    steps: tuple[Step, ...] = (PoolingSpec(),)
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str | None = None
    # Set when the input module is a StaticEmbedding or a Router instead of a Transformer.
    static_embedding: StaticEmbeddingSpec | None = None
    router: RouterSpec | None = None
    # Embedding columns kept after the last module (Matryoshka models); None keeps all.
    truncate_dim: int | None = None

    @property
    def pooling(self) -> PoolingSpec | None:
        """The pooling step, if the pipeline has one."""
        return next((step for step in self.steps if isinstance(step, PoolingSpec)), None)


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


def _read_layer_norm(folder: Path) -> LayerNormSpec:
    path = folder / "config.json"
    return LayerNormSpec(path=folder, dimension=_size_field(_read_json(path), path, "dimension"))


def _read_dropout(folder: Path) -> DropoutSpec:
    path = folder / "config.json"
    config = _read_json(path) if path.is_file() else {}
    rate = _field(config, path, "dropout", (float, int), 0.2)
    if not 0 <= rate <= 1:
        raise ValueError(f"{path}: field 'dropout' is {rate}; expected a number from 0 to 1.")
    return DropoutSpec(rate=float(rate))


def _read_weighted_layer_pooling(folder: Path) -> WeightedLayerPoolingSpec:
    path = folder / "config.json"
    config = _read_json(path)
    # Older saves name the dimension "word_embedding_dimension".
    key = "embedding_dimension" if "embedding_dimension" in config else "word_embedding_dimension"
    layers = _size_field(config, path, "num_hidden_layers", 12)
    start = _field(config, path, "layer_start", (int,), 4)
    if not 0 <= start <= layers:
        raise ValueError(
            f"{path}: field 'layer_start' is {start}; expected an integer from 0 to "
            f"num_hidden_layers={layers}."
        )
    return WeightedLayerPoolingSpec(
        path=folder,
        dimension=_size_field(config, path, key),
        num_hidden_layers=layers,
        layer_start=start,
    )


_STEP_READERS = {
    "Pooling": read_pooling,
    "Dense": _read_dense,
    # Normalize has no parameters; its folder is often missing.
    "Normalize": lambda folder: NormalizeSpec(),
    "LayerNorm": _read_layer_norm,
    "Dropout": _read_dropout,
    "WeightedLayerPooling": _read_weighted_layer_pooling,
}
# "Asym" is the reference's former name of Router.
_INPUT_KINDS = ("Transformer", "StaticEmbedding", "Router", "Asym")
_SUPPORTED = (
    "a Transformer, StaticEmbedding or Router first, then WeightedLayerPooling, Pooling, "
    "Dense, LayerNorm, Dropout and Normalize"
)


def _read_pipeline(
    entries: list[tuple[str, Path]], where: Path, *, in_router: bool = False
) -> FolderSpec:
    """The pipeline of ``(type, folder)`` modules, checked module by module.

    Token-level steps (WeightedLayerPooling, Pooling) must follow a Transformer; the
    sentence-level ones (Dense, LayerNorm, Dropout, Normalize) a Pooling, a
    StaticEmbedding or a Router; the pipeline must end with a sentence embedding.
    """
    if not entries:
        raise ValueError(f"{where}: a pipeline with no modules.")
    (first_type, first_folder), rest = entries[0], entries[1:]
    first = _module_kind(first_type)
    if first not in _INPUT_KINDS or (in_router and first in ("Router", "Asym")):
        raise ValueError(
            f"{where}: module {first_type!r} at position 0 is not supported as the first "
            f"module; skembed runs {_SUPPORTED}"
            + (" (a Router inside a Router is not)." if in_router else ".")
        )
    static = router = None
    settings: dict[str, Any] = {}
    if first == "Transformer":
        settings = _transformer_settings(first_folder)
    elif first == "StaticEmbedding":
        static = StaticEmbeddingSpec(path=first_folder)
    else:
        router = _read_router(first_folder)
    tokens = first == "Transformer"  # whether the running output is token embeddings
    steps: list[Step] = []
    for position, (type_name, folder) in enumerate(rest, start=1):
        kind = _module_kind(type_name)
        reader = _STEP_READERS.get(kind)
        if reader is None:
            raise ValueError(
                f"{where}: module {type_name!r} at position {position} is not supported; "
                f"skembed runs {_SUPPORTED}."
            )
        token_step = kind in ("Pooling", "WeightedLayerPooling")
        if token_step != tokens:
            needs = "token embeddings (after a Transformer, before Pooling)"
            if not token_step:
                needs = "a sentence embedding (after Pooling, a StaticEmbedding or a Router)"
            raise ValueError(f"{where}: module {type_name!r} at position {position} needs {needs}.")
        steps.append(reader(folder))
        tokens = tokens and kind != "Pooling"
    if tokens:
        raise ValueError(f"{where} has no Pooling module after the Transformer.")
    return FolderSpec(
        transformer_path=first_folder,
        steps=tuple(steps),
        static_embedding=static,
        router=router,
        **settings,
    )


def _transformer_settings(folder: Path) -> dict[str, Any]:
    """``max_seq_length`` and ``do_lower_case`` of a transformer's ``sentence_bert_config.json``."""
    path = folder / "sentence_bert_config.json"
    config = _read_json(path) if path.is_file() else {}
    return {
        "max_seq_length": _size_field(config, path, "max_seq_length", None),
        "do_lower_case": _field(config, path, "do_lower_case", (bool,), False),
    }


def _read_router(folder: Path) -> RouterSpec:
    """Read ``router_config.json`` (or an older Asym ``config.json``) and its routes."""
    path = folder / "router_config.json"
    if not path.is_file():
        path = folder / "config.json"
    config = _read_json(path)
    types = _string_map(config, path, "types")
    structure = _field(config, path, "structure", (dict,))
    routes = {}
    for route, ids in structure.items():
        # Saving names the route's module folders after it: no separator may lead elsewhere.
        if not route or any(c in route for c in "/\\\0:"):
            raise ValueError(
                f"{path}: route name {route!r} of field 'structure' must be a non-empty name "
                "without '/', '\\', ':' or NUL."
            )
        if not isinstance(ids, list) or not all(isinstance(i, str) and i in types for i in ids):
            raise ValueError(
                f"{path}: route {route!r} of field 'structure' is {ids!r}; expected a list of "
                f"module names from field 'types' {sorted(types)}."
            )
        entries = [(types[i], _module_folder(folder, i, f"{path}: module {i!r}")) for i in ids]
        routes[route] = _read_pipeline(entries, path, in_router=True)
    if not routes:
        raise ValueError(f"{path}: field 'structure' names no route.")
    parameters = _field(config, path, "parameters", (dict,), {})
    default_route = _field(parameters, path, "default_route", (str, type(None)), None)
    if default_route is not None and default_route not in routes:
        raise ValueError(
            f"{path}: default_route {default_route!r} is not among the routes {sorted(routes)}."
        )
    if default_route is None and _field(parameters, path, "allow_empty_key", (bool,), True):
        default_route = next(iter(routes))
    task_routes: dict[str | None, str] = {}
    mappings = _field(parameters, path, "route_mappings", (dict, type(None)), None) or {}
    for key, target in mappings.items():
        try:
            task, modality = ast.literal_eval(key)
        except (ValueError, SyntaxError, TypeError) as exc:
            raise ValueError(
                f"{path}: route_mappings key {key!r} is not a (task, modality) pair."
            ) from exc
        if target not in routes or not isinstance(task, (str, type(None))):
            raise ValueError(
                f"{path}: route_mappings {key!r}: {target!r} is not among the routes "
                f"{sorted(routes)}, or the task is not a string or None."
            )
        # Only mappings that take text apply; one for text wins over one for any modality.
        if modality == "text" or (modality is None and task not in task_routes):
            task_routes[task] = target
    return RouterSpec(routes=routes, default_route=default_route, task_routes=task_routes)


def _read_modules(path: Path, modules_path: Path) -> FolderSpec:
    """The module pipeline of ``modules.json``."""
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
    ordered = [(type_name, folder) for _, type_name, folder in sorted(entries, key=lambda e: e[0])]
    return _read_pipeline(ordered, modules_path)


def named_module_folders(path: Path) -> list[Path]:
    """The module folders that ``modules.json`` and Router configs name, whatever their names.

    For the fingerprint, which must cover every file the loader opens: a module folder may
    be hidden (``".2_Dense"``). Entries are not checked here (:func:`read_folder` refuses
    malformed ones before anything loads); those that cannot be read are skipped.
    """
    named: list[Path] = []

    def add(root: Path, config_names: tuple[str, ...], key: str, depth: int) -> None:
        for name in config_names:
            config_path = root / name
            if config_path.is_file():
                break
        else:
            return
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return
        if key == "modules":
            entries = [
                (e.get("path"), e.get("type"))
                for e in (config if isinstance(config, list) else [])
                if isinstance(e, dict)
            ]
        else:
            types = config.get("types") if isinstance(config, dict) else None
            entries = list(types.items()) if isinstance(types, dict) else []
        for relative, type_name in entries:
            if not isinstance(relative, str) or not relative or Path(relative).is_absolute():
                continue
            folder = root / relative
            named.append(folder)
            kind = _module_kind(type_name) if isinstance(type_name, str) else ""
            # A Router inside a Router is refused on reading: one level of routes is enough.
            if kind in ("Router", "Asym") and depth == 0:
                add(folder, ("router_config.json", "config.json"), "types", depth + 1)

    add(path, ("modules.json",), "modules", 0)
    return named


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
        pipeline = _read_modules(path, modules_path)
    else:
        pipeline = FolderSpec(transformer_path=path, **_transformer_settings(path))
    st_path = path / "config_sentence_transformers.json"
    st_config = _read_json(st_path) if st_path.is_file() else {}
    return replace(
        pipeline,
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


def check_model_config(folder: Path, built: Mapping[str, Any] | None = None) -> None:
    """Refuse a transformer config whose sizes the weights on disk cannot back.

    Every size field of ``config.json`` must be an integer from 1 to
    :data:`MAX_CONFIG_SIZE`, and the parameter count the config implies
    (layers, hidden and intermediate sizes, vocabulary and positions) must fit
    in the weight files: a config that declares a million layers is refused
    here instead of hanging while the model is built.

    Parameters
    ----------
    folder : Path
        The transformer's folder (holding ``config.json`` and the weights).
    built : mapping, default=None
        The configuration transformers builds from the file, its class's
        defaults filled in (``PretrainedConfig.to_dict()``). A size the file
        leaves out is read there: left out, ``hidden_size`` is not 0 but
        the class's default. ``None``: the file alone is checked, before
        transformers reads it.

    Raises
    ------
    ValueError
        Naming the file and the field.
    """
    path = folder / "config.json"
    if not path.is_file():
        return
    config = _read_json(path)
    sizes: dict[str, int] = {}
    defaults: list[str] = []
    for names in (_LAYERS, _HIDDEN, _INTERMEDIATE, _VOCABULARY, _POSITIONS):
        present = [name for name in names if config.get(name) is not None]
        for name in present:
            _size_field(config, path, name)
        if present:
            sizes[present[0]] = config[present[0]]
            continue
        filled = [n for n in names if isinstance((built or {}).get(n), int)]
        sizes[filled[0] if filled else names[0]] = built[filled[0]] if filled else 0
        defaults += filled[:1]
    layers, hidden, intermediate, vocabulary, positions = sizes.values()
    parameters = (
        layers * (4 * hidden * hidden + 2 * hidden * intermediate)
        + (vocabulary + positions) * hidden
    )
    weight_bytes = sum(
        p.stat().st_size for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file()
    )
    if weight_bytes and parameters * _MIN_BYTES_PER_PARAMETER > weight_bytes:
        filled_note = (
            f" ({', '.join(defaults)}: not in the file, transformers' default)" if defaults else ""
        )
        raise ValueError(
            f"{path}: the sizes {sizes}{filled_note} describe about {parameters:,} parameters, "
            f"but the weight files in {folder} hold only {weight_bytes:,} bytes; the config "
            "does not match its weights."
        )


def write_folder_configs(
    spec: FolderSpec,
    path: Path,
    *,
    hidden_size: int,
    max_seq_length: int,
    similarity_fn_name: str,
    versions: dict[str, str],
    route_hidden_sizes: dict[str, int] | None = None,
    truncate_dim: int | None = None,
) -> dict[str | None, list[Path]]:
    """Write the sentence-transformers config files of ``spec`` into ``path``.

    The input modules' own files (Hugging Face config, tokenizer, weights) and the
    weights of the steps are written by the caller. Files use the key names that
    every sentence-transformers release reads. A Router's routes go in one
    subfolder per module, named ``<route>_<position>_<type>``, as the reference
    names them; each route's transformer writes its own ``max_seq_length``.

    Parameters
    ----------
    spec : FolderSpec
    path : Path
    hidden_size : int
        Token embedding size of the top-level transformer.
    max_seq_length : int
        Token limit of the top-level transformer.
    similarity_fn_name : str
    versions : dict of str to str
    route_hidden_sizes : dict of str to int, optional
        Token embedding size of each route's input module.
    truncate_dim : int, optional
        Embedding columns to keep, written where the reference reads it.

    Returns
    -------
    dict
        For the top-level pipeline (key ``None``) and each route (its name): the
        folder of the input module followed by the folder of each step.
    """
    folders: dict[str | None, list[Path]] = {}
    if spec.router is not None:
        modules = [_module_entry(0, "", "Router")]
        folders[None] = [path]
        types, structure = {}, {}
        for route, route_spec in spec.router.routes.items():
            kinds = [_input_kind(route_spec), *map(_step_kind, route_spec.steps)]
            names = [f"{route}_{i}_{kind}" for i, kind in enumerate(kinds)]
            types.update(
                {
                    name: f"sentence_transformers.models.{kind}"
                    for name, kind in zip(names, kinds, strict=True)
                }
            )
            structure[route] = names
            folders[route] = _write_pipeline(
                route_spec,
                path,
                names,
                hidden_size=(route_hidden_sizes or {})[route],
                max_seq_length=route_spec.max_seq_length,
            )
        mappings = {str((task, None)): target for task, target in spec.router.task_routes.items()}
        _write_json(
            path / "router_config.json",
            {
                "types": types,
                "structure": structure,
                "parameters": {
                    "default_route": spec.router.default_route,
                    "allow_empty_key": True,
                    "route_mappings": mappings,
                },
            },
        )
        for idx, step in enumerate(spec.steps, start=1):
            name = f"{idx}_{_step_kind(step)}"
            modules.append(_module_entry(idx, name, _step_kind(step)))
            folders[None].append(_write_step(step, path / name, hidden_size))
    else:
        names = ["", *(f"{i}_{_step_kind(step)}" for i, step in enumerate(spec.steps, 1))]
        modules = [_module_entry(0, "", _input_kind(spec))]
        modules += [
            _module_entry(idx, name, _step_kind(step))
            for idx, (name, step) in enumerate(zip(names[1:], spec.steps, strict=True), start=1)
        ]
        folders[None] = _write_pipeline(
            spec, path, names, hidden_size=hidden_size, max_seq_length=max_seq_length
        )
    _write_json(path / "modules.json", modules)
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


def _step_kind(step: Step) -> str:
    # The reference's module class of a step: its spec's name without "Spec".
    return type(step).__name__.removesuffix("Spec")


def _input_kind(spec: FolderSpec) -> str:
    return "StaticEmbedding" if spec.static_embedding is not None else "Transformer"


def _module_entry(idx: int, folder: str, kind: str) -> dict[str, Any]:
    return {
        "idx": idx,
        "name": str(idx),
        "path": folder,
        "type": f"sentence_transformers.models.{kind}",
    }


def _write_pipeline(
    spec: FolderSpec, path: Path, names: list[str], *, hidden_size: int, max_seq_length: int | None
) -> list[Path]:
    """Write the configs of one pipeline (input module, then steps) into ``path / name``."""
    folders = [path / names[0]]
    folders[0].mkdir(parents=True, exist_ok=True)
    if spec.static_embedding is None:
        config: dict[str, Any] = {"do_lower_case": spec.do_lower_case}
        if max_seq_length is not None:
            config = {"max_seq_length": max_seq_length, **config}
        _write_json(folders[0] / "sentence_bert_config.json", config)
    for step, name in zip(spec.steps, names[1:], strict=True):
        folders.append(_write_step(step, path / name, hidden_size))
    return folders


def _write_step(step: Step, folder: Path, hidden_size: int) -> Path:
    """Write the config of one step into ``folder``; its weights are the caller's."""
    if isinstance(step, PoolingSpec):
        config: dict[str, Any] = {"word_embedding_dimension": hidden_size}
        config.update({key: name in step.modes for key, name in _LEGACY_POOLING_KEYS.items()})
        config["include_prompt"] = step.include_prompt
        if list(step.modes) != [m for m in _LEGACY_POOLING_KEYS.values() if m in step.modes]:
            # The boolean keys fix the order of concatenation; recent releases read this key
            # first, and older ones could not express another order anyway.
            config["pooling_mode"] = list(step.modes)
    elif isinstance(step, DenseSpec):
        config = {
            "in_features": step.in_features,
            "out_features": step.out_features,
            "bias": step.bias,
            "activation_function": step.activation,
        }
        if step.use_residual:
            config["use_residual"] = True
    elif isinstance(step, NormalizeSpec):
        config = {}
    elif isinstance(step, LayerNormSpec):
        config = {"dimension": step.dimension}
    elif isinstance(step, DropoutSpec):
        config = {"dropout": step.rate}
    elif isinstance(step, WeightedLayerPoolingSpec):
        config = {
            "word_embedding_dimension": step.dimension,
            "layer_start": step.layer_start,
            "num_hidden_layers": step.num_hidden_layers,
        }
    else:
        raise TypeError(f"Unknown module step {step!r}.")
    folder.mkdir(parents=True, exist_ok=True)
    if config:
        _write_json(folder / "config.json", config)
    return folder


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
