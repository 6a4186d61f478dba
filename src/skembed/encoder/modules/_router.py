"""The Router input module: one module pipeline per route, picked by the task of the texts."""

from __future__ import annotations

import ast
import copy
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .._config import (
    field,
    module_folder,
    read_json,
    read_json_or_none,
    string_map,
    write_json,
)
from ._base import Features, LoadContext, Module, register_module
from ._pipeline import Pipeline, load_pipeline, save_pipeline

__all__ = ["Router"]


@register_module
class Router(Module):
    """Routes ("query", "document", ...), each a pipeline with an input module of its own.

    Parameters
    ----------
    routes : dict of str to Pipeline
    default_route : str, optional
    task_routes : dict
        Task (``None``: any) -> route, where the folder's ``route_mappings`` say so
        for text.
    """

    type_name = "Router"
    # "Asym" is the reference's former name of Router.
    aliases = ("Asym",)
    takes = "text"
    gives = "sentence"
    may_be_routed = False

    def __init__(
        self,
        routes: dict[str, Pipeline],
        default_route: str | None = None,
        task_routes: dict[str | None, str] | None = None,
    ) -> None:
        super().__init__()
        self.routes = torch.nn.ModuleDict(routes)
        self.default_route = default_route
        self.task_routes = dict(task_routes or {})

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

    def chain(self, task: str | None) -> list[Module]:
        """The modules of the route of ``task``."""
        return list(self.routes[self.route_for(task)])

    @property
    def first_input(self) -> Module:
        """The first route's input module (whose tokenizer the reference's Router reports)."""
        return next(iter(self.routes.values())).input_module

    @classmethod
    def named_folders(cls, folder: Path) -> list[Path]:
        """The route module folders that ``router_config.json`` (or ``config.json``) names.

        A Router inside a route is refused on loading, so one level is enough.
        """
        path = folder / "router_config.json"
        config = read_json_or_none(path if path.is_file() else folder / "config.json")
        types = config.get("types") if isinstance(config, dict) else None
        return [
            folder / relative
            for relative in (types if isinstance(types, dict) else {})
            if relative and not Path(relative).is_absolute()
        ]

    @classmethod
    def load(cls, folder: Path, context: LoadContext) -> Router:
        """Read ``router_config.json`` (or an older Asym ``config.json``) and its routes."""
        path = folder / "router_config.json"
        if not path.is_file():
            path = folder / "config.json"
        config = read_json(path)
        types = string_map(config, path, "types")
        structure = field(config, path, "structure", (dict,))
        route_context = replace(context, in_router=True, previous=None, dimension=None)
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
                    f"{path}: route {route!r} of field 'structure' is {ids!r}; expected a list "
                    f"of module names from field 'types' {sorted(types)}."
                )
            entries = [(types[i], module_folder(folder, i, f"{path}: module {i!r}")) for i in ids]
            routes[route] = load_pipeline(entries, path, route_context)
        if not routes:
            raise ValueError(f"{path}: field 'structure' names no route.")
        dimensions = {name: pipeline.output_dimension for name, pipeline in routes.items()}
        if len(set(dimensions.values())) != 1:
            raise ValueError(
                f"The routes of the Router in {folder} give embeddings of different sizes "
                f"{dimensions}; skembed needs one size for all texts."
            )
        default_route, task_routes = _read_parameters(config, path, routes)
        return cls(routes, default_route, task_routes)

    def save(self, folder: Path) -> None:
        types, structure = {}, {}
        for route, pipeline in self.routes.items():
            written = save_pipeline(list(pipeline), folder, prefix=f"{route}_")
            types.update(dict(written))
            structure[route] = [name for name, _ in written]
        mappings = {str((task, None)): target for task, target in self.task_routes.items()}
        write_json(
            folder / "router_config.json",
            {
                "types": types,
                "structure": structure,
                "parameters": {
                    "default_route": self.default_route,
                    "allow_empty_key": True,
                    "route_mappings": mappings,
                },
            },
        )

    def with_max_seq_length(self, limit: int | None) -> Router:
        """A copy whose routes save ``limit``; the Router's own limit leaves each route its own."""
        own = None if limit == self.default_max_seq_length else limit
        saved = copy.copy(self)
        saved._modules = dict(self._modules)
        saved.routes = torch.nn.ModuleDict(
            {
                name: Pipeline(pipeline.input_module.with_max_seq_length(own), *list(pipeline)[1:])
                for name, pipeline in self.routes.items()
            }
        )
        return saved

    @property
    def output_dimension(self) -> int:
        return next(iter(self.routes.values())).output_dimension

    @property
    def default_max_seq_length(self) -> int:
        """The largest limit of its transformer routes, as the reference library reports."""
        limits = [p.input_module.default_max_seq_length for p in self.routes.values()]
        return max((n for n in limits if n != sys.maxsize), default=sys.maxsize)

    @property
    def max_position_embeddings(self) -> int | None:
        """The smallest position limit of its routes."""
        limits = [p.input_module.max_position_embeddings for p in self.routes.values()]
        return min((n for n in limits if n is not None), default=None)

    def forward(self, features: Features) -> Features:
        return self.routes[self.route_for(features.get("task"))](features)


def _read_parameters(
    config: dict[str, Any], path: Path, routes: dict[str, Pipeline]
) -> tuple[str | None, dict[str | None, str]]:
    """The default route and the task -> route mappings that take text."""
    parameters = field(config, path, "parameters", (dict,), {})
    default_route = field(parameters, path, "default_route", (str, type(None)), None)
    if default_route is not None and default_route not in routes:
        raise ValueError(
            f"{path}: default_route {default_route!r} is not among the routes {sorted(routes)}."
        )
    if default_route is None and field(parameters, path, "allow_empty_key", (bool,), True):
        default_route = next(iter(routes))
    task_routes: dict[str | None, str] = {}
    mappings = field(parameters, path, "route_mappings", (dict, type(None)), None) or {}
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
    return default_route, task_routes
