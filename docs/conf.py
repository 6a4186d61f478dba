"""Sphinx configuration for the skembed documentation."""

from importlib.metadata import version as _version

project = "skembed"
author = "the skembed developers"
copyright = "2026, the skembed developers"  # noqa: A001 - Sphinx reads this name
release = _version("skembed")
version = release

# myst_nb renders the notebooks (and loads myst_parser, which reads the benchmarks README as
# Markdown so its tables render as tables). Chosen over nbsphinx, which needs the pandoc binary.
extensions = ["sphinx.ext.autodoc", "numpydoc", "myst_nb"]
myst_enable_extensions: list[str] = []
# The build executes every notebook, once: CI runs no other notebook step, and a cell error
# fails the build. "force" ignores the outputs stored in the .ipynb files, so the pages show
# what the code prints today.
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_show_tb = True
# Seconds per cell: the slowest cells encode a few thousand sentences on a CPU.
nb_execution_timeout = 600
# The README's "##" sections sit under this page's own title.
suppress_warnings = ["myst.header"]
autodoc_typehints = "none"  # numpydoc sections already state the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]
html_theme = "alabaster"
html_static_path: list[str] = []
# Every cross-reference must resolve. The build runs offline (no intersphinx inventories), so
# the few references to other projects' objects are listed here.
nitpicky = True
nitpick_ignore = [("py:func", "sklearn.metrics.pairwise_kernels")]
