"""What every module kind is, and the registry that finds a kind by its type name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

__all__ = [
    "LoadContext",
    "Module",
    "load_strict",
    "load_weights",
    "module_class",
    "register_module",
    "registered_modules",
    "save_weights",
]

# What flows between modules: the reference's names.
Features = dict[str, Any]


@dataclass(frozen=True)
class LoadContext:
    """What a module is loaded into, and what comes before it.

    Parameters
    ----------
    device : torch.device
    dtype : torch.dtype
        Precision of the transformer; other modules run in float32.
    trust_remote_code : bool
        Whether code named by the folder may run.
    dimension : int or None
        Size of the embeddings the module before gives (``None`` for an input module).
    previous : Module or None
        The module before (``None`` for an input module).
    in_router : bool
        Whether the pipeline is a route of a Router.
    """

    device: torch.device
    dtype: torch.dtype = torch.float32
    trust_remote_code: bool = False
    dimension: int | None = None
    previous: Module | None = None
    in_router: bool = False


class Module(torch.nn.Module):
    """One module of a sentence-transformers pipeline, as a ``torch.nn.Module``.

    A module kind reads itself from its folder (:meth:`load`), writes itself back
    (:meth:`save`), reports the size of what it gives (:attr:`output_dimension`),
    and maps the features of a batch to new features (:meth:`forward`), with the
    reference's feature names: ``input_ids``, ``attention_mask``,
    ``token_embeddings``, ``sentence_embedding``, plus skembed's ``prompt_length``
    (prompt tokens that a pooling without the prompt leaves out) and ``task``.

    Subclasses set :attr:`type_name` and are registered with
    :func:`register_module`; :attr:`takes` and :attr:`gives` say where in a
    pipeline the kind may stand.
    """

    #: The reference's class name of the kind, the key of the registry.
    type_name: ClassVar[str] = ""
    #: "text" (an input module), "tokens" or "sentence": what the module reads.
    takes: ClassVar[str] = "sentence"
    #: "tokens" or "sentence": what the module gives.
    gives: ClassVar[str] = "sentence"
    #: Older type names of the kind, found in older saves.
    aliases: ClassVar[tuple[str, ...]] = ()
    #: Whether the kind may stand in a Router's route.
    may_be_routed: ClassVar[bool] = True

    @classmethod
    def load(cls, folder: Path, context: LoadContext) -> Module:
        """Read the module from ``folder`` (its config and weights).

        Raises
        ------
        ValueError
            If a config field is malformed, or does not fit ``context.dimension``.
        """
        raise NotImplementedError

    @classmethod
    def named_folders(cls, folder: Path) -> list[Path]:
        """Folders under ``folder`` that the kind's config names and :meth:`load` opens.

        For the fingerprint, which must cover every file the loader opens, whatever
        its name (a hidden ``.query_0_Transformer``). Read leniently: a malformed
        config names nothing here, and :meth:`load` refuses it.
        """
        return []

    def save(self, folder: Path) -> None:
        """Write the module's config and weights into ``folder`` (created by the caller)."""
        raise NotImplementedError

    @property
    def output_dimension(self) -> int:
        """Size of the embeddings the module gives."""
        raise NotImplementedError

    @property
    def type_path(self) -> str:
        """The type written to ``modules.json``, where the reference finds the class."""
        return f"sentence_transformers.models.{self.type_name}"

    def forward(self, features: Features) -> Features:  # pragma: no cover - abstract
        raise NotImplementedError


_ModuleType = TypeVar("_ModuleType", bound=type[Module])
_REGISTRY: dict[str, type[Module]] = {}


def register_module(cls: _ModuleType) -> _ModuleType:
    """Register a module kind under its :attr:`Module.type_name` and aliases (a class decorator).

    Raises
    ------
    ValueError
        If the class has no type name, or another class holds it.
    """
    names = (cls.type_name, *cls.aliases)
    if not cls.type_name or any(_REGISTRY.get(name, cls) is not cls for name in names):
        raise ValueError(
            f"Module kind {cls.__qualname__} needs a type_name of its own; got {names!r} "
            f"(registered: {sorted(_REGISTRY)})."
        )
    _REGISTRY.update(dict.fromkeys(names, cls))
    return cls


def registered_modules() -> dict[str, type[Module]]:
    """The registered module kinds, by type name."""
    return dict(_REGISTRY)


def module_class(type_name: str) -> type[Module] | None:
    """The module kind of a ``modules.json`` type, or ``None`` if none is registered.

    Saves name the same class by several import paths across reference versions
    (``sentence_transformers.models.Pooling``,
    ``sentence_transformers.sentence_transformer.modules.pooling.Pooling``): the
    last component is the kind.
    """
    return _REGISTRY.get(type_name.rsplit(".", 1)[-1])


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors``, else of ``pytorch_model.bin``, in ``folder``."""
    safetensors_path = folder / "model.safetensors"
    if safetensors_path.is_file():
        from safetensors.torch import load_file

        return load_file(safetensors_path)
    bin_path = folder / "pytorch_model.bin"
    if bin_path.is_file():
        # weights_only refuses pickled code: a .bin file cannot run anything on load.
        return torch.load(bin_path, map_location="cpu", weights_only=True)
    raise OSError(f"No model.safetensors or pytorch_model.bin in {folder}.")


def load_strict(module: torch.nn.Module, folder: Path) -> None:
    """Load a module's weights, refused unless they are exactly the ones its config implies."""
    try:
        module.load_state_dict(load_weights(folder))
    except RuntimeError as exc:
        raise ValueError(f"The weights in {folder} do not match its config.json: {exc}") from None


def save_weights(module: torch.nn.Module, folder: Path) -> None:
    """Write a module's state as ``model.safetensors`` in ``folder``."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, folder / "model.safetensors")
