"""A chain of modules, read from and written to the reference's folder layout."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from .._config import write_json
from ._base import Features, LoadContext, Module, module_class, registered_modules

__all__ = ["Pipeline", "load_pipeline", "save_pipeline", "write_modules_json"]


class Pipeline(torch.nn.Sequential):
    """Modules run in order, an input module first, as the reference's ``SentenceTransformer``.

    Calling it maps the features of a tokenized batch to features that hold
    ``sentence_embedding``; with gradients enabled it is trained like any
    ``torch.nn.Module``.
    """

    def forward(self, features: Features) -> Features:
        for module in self:
            features = module(features)
        return features

    @property
    def input_module(self) -> Module:
        """The first module (a Transformer, a StaticEmbedding or a Router)."""
        return self[0]

    @property
    def output_dimension(self) -> int:
        """Size of the sentence embeddings the pipeline gives."""
        return self[-1].output_dimension

    def chain(self, task: str | None) -> list[Module]:
        """The modules that run texts of ``task``, a Router replaced by its route's modules."""
        first = self[0]
        head = first.chain(task) if hasattr(first, "chain") else [first]
        return [*head, *list(self)[1:]]


def _described(where: object, position: int, type_name: str) -> str:
    return f"{where}: module {type_name!r} at position {position}"


def load_pipeline(entries: list[tuple[str, Path]], where: object, context: LoadContext) -> Pipeline:
    """Load the ``(type, folder)`` modules of a pipeline, in order.

    The order is checked on the type names before anything is loaded: an
    input module first (no Router inside a Router), then each module takes what
    the one before gives, and the last gives a sentence embedding.

    Raises
    ------
    ValueError
        For an unknown type or a module out of place, naming ``where`` and the position.
    """
    if not entries:
        raise ValueError(f"{where}: a pipeline with no modules.")
    kinds = registered_modules()
    inputs = sorted(name for name, cls in kinds.items() if cls.takes == "text")
    others = sorted(name for name, cls in kinds.items() if cls.takes != "text")
    supported = f"an input module ({', '.join(inputs)}) first, then {', '.join(others)}"
    classes = []
    gives = "text"
    for position, (type_name, _) in enumerate(entries):
        cls = module_class(type_name)
        if cls is None:
            raise ValueError(
                f"{_described(where, position, type_name)} is not supported; "
                f"skembed runs {supported}."
            )
        nested = context.in_router and not cls.may_be_routed
        if (cls.takes == "text") != (position == 0) or nested:
            raise ValueError(
                f"{_described(where, position, type_name)} is not supported there; skembed runs "
                f"{supported}"
                + (" (a Router inside a Router is not)." if context.in_router else ".")
            )
        if position and cls.takes != gives:
            needs = (
                "token embeddings (after a Transformer, before Pooling)"
                if cls.takes == "tokens"
                else "a sentence embedding (after Pooling, a StaticEmbedding or a Router)"
            )
            raise ValueError(f"{_described(where, position, type_name)} needs {needs}.")
        gives = cls.gives
        classes.append(cls)
    if gives != "sentence":
        raise ValueError(f"{where} has no Pooling module after the Transformer.")
    modules: list[Module] = []
    for cls, (_, folder) in zip(classes, entries, strict=True):
        previous = modules[-1] if modules else None
        step_context = replace(
            context,
            previous=previous,
            dimension=previous.output_dimension if previous is not None else None,
        )
        modules.append(cls.load(folder, step_context).to(context.device))
    return Pipeline(*modules).eval()


def save_pipeline(modules: list[Module], path: Path, prefix: str = "") -> list[tuple[str, str]]:
    """Write each module into its folder under ``path``; return ``(folder, type)`` per module.

    The input module goes in ``path`` itself (or ``<prefix>0_<type>`` when a
    prefix is given, as a Router's routes are laid out); module ``i`` in
    ``<prefix><i>_<type>``, as the reference names them.
    """
    written = []
    for position, module in enumerate(modules):
        name = f"{prefix}{position}_{module.type_name}" if prefix or position else ""
        folder = path / name
        folder.mkdir(parents=True, exist_ok=True)
        module.save(folder)
        written.append((name, module.type_path))
    return written


def write_modules_json(path: Path, written: list[tuple[str, str]]) -> None:
    """Write ``modules.json`` for modules written by :func:`save_pipeline`."""
    write_json(
        path / "modules.json",
        [
            {"idx": idx, "name": str(idx), "path": name, "type": type_path}
            for idx, (name, type_path) in enumerate(written)
        ],
    )
