"""Sphinx configuration for the skembed documentation."""

from importlib.metadata import version as _version

project = "skembed"
author = "the skembed developers"
copyright = "2026, the skembed developers"  # noqa: A001 - Sphinx reads this name
release = _version("skembed")
version = release

extensions = ["sphinx.ext.autodoc", "numpydoc", "myst_parser"]
# Markdown (the benchmarks README) is read with MyST, so its tables render as tables.
myst_enable_extensions: list[str] = []
# The README's "##" sections sit under this page's own title.
suppress_warnings = ["myst.header"]
autodoc_typehints = "none"  # numpydoc sections already state the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []
