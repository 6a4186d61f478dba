"""The ``skembed`` command: similarity tables, encoding files, STSb evaluation."""

from __future__ import annotations

import argparse
import glob
import importlib
import itertools
import os
import socket
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from . import __version__
from ._inputs import as_texts
from ._options import (
    CHUNK_POOLINGS,
    DEFAULT_MODEL,
    DTYPE_CHOICES,
    LONG_TEXT_POLICIES,
    MISSING_POLICIES,
    allows_missing,
)
from ._similarity_function import SimilarityFunction
from ._warnings import TruncationWarning, truncation_warning
from .datasets import SPLITS

__all__ = ["main"]

_TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
_INPUT_SUFFIXES = (".txt", *_TABLE_SUFFIXES)
_OUTPUT_SUFFIXES = (".npy", ".parquet", ".csv")
# The packages a file format needs beyond skembed's own (each group is a set of
# alternatives), and the extra of skembed that installs them.
_FORMAT_NEEDS = {".csv": (("pandas",),), ".parquet": (("pandas",), ("pyarrow",))}
_FORMAT_EXTRAS = {".csv": "pandas", ".parquet": "parquet"}
_DEFAULT_MISSING = MISSING_POLICIES[0]
# Rows read, encoded and written at a time by ``encode``: its memory does not grow with the
# input's length.
_BLOCK_ROWS = 8192
# Rows the truncation warning of ``encode`` holds at most (it counts them all).
_KEPT_POSITIONS = 1000


def _embedder(args: argparse.Namespace, **params) -> Any:
    # Imported here: torch, transformers and scikit-learn load only for a command that encodes.
    from ._embedder import SentenceEmbedder

    options = {
        # Progress is for a person watching: on a terminal, unless --quiet.
        "show_progress_bar": _show_progress(args),
        "long_text": args.long_text,
        "chunk_tokens": args.chunk_tokens,
        "chunk_overlap": args.chunk_overlap,
        "chunk_pooling": args.chunk_pooling,
        **params,
    }
    return SentenceEmbedder(
        args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size, **options
    ).fit()


def _show_progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


def _table(
    rows: Sequence[str], columns: Sequence[str], values: np.ndarray, decimals: int = 4
) -> str:
    """An aligned text table with row labels and column headers."""
    cells = [[f"{v:.{decimals}f}" for v in row] for row in values]
    label_width = max(len(r) for r in rows)
    widths = [max(len(c), *(len(row[j]) for row in cells)) for j, c in enumerate(columns)]
    lines = [
        " " * label_width
        + "  "
        + "  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))
    ]
    for label, row in zip(rows, cells, strict=True):
        body = "  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True))
        lines.append(label.ljust(label_width) + "  " + body)
    return "\n".join(lines)


def _similarity(args: argparse.Namespace) -> None:
    embedder = _embedder(args, similarity_fn_name=args.metric)
    matrix = embedder.similarity(args.texts)
    labels = [f"[{i}] {_shorten(text)}" for i, text in enumerate(args.texts)]
    print(f"{embedder.similarity_fn_name_} similarity, {args.model}")
    print(_table(labels, [f"[{i}]" for i in range(len(args.texts))], matrix))


def _shorten(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass
class _Block:
    """Consecutive rows of the input file."""

    start: int  # the row number of the first
    texts: list[str | None]  # None: a missing text
    ids: Any  # the --id-column values (a list or a pandas Series), or None


@dataclass
class _Input:
    """The input file, read block by block, each time it is iterated."""

    path: Path
    column: str | None
    id_column: str | None
    first_line: int | None  # the file line of row 0 when every row is exactly one line

    def blocks(self) -> Iterator[_Block]:
        suffix = self.path.suffix.lower()
        if suffix == ".txt":
            lines = _chunked(_lines(self.path))
            rows = (([line or None for line in block], None) for block in lines)
        elif suffix == ".tsv":
            rows = _tsv_rows(self.path, self.column, self.id_column)
        else:
            rows = _frame_rows(self.path, self.column, self.id_column)
        start = 0
        for texts, ids in rows:
            yield _Block(start, texts, ids)
            start += len(texts)


def _chunked(items: Any) -> Iterator[list]:
    """Lists of :data:`_BLOCK_ROWS` consecutive items (the last one shorter)."""
    iterator = iter(items)
    while block := list(itertools.islice(iterator, _BLOCK_ROWS)):
        yield block


def _lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 file, split on "\\n" only, read a megabyte at a time.

    ``str.splitlines`` also splits on "\\r", "\\f", U+0085, U+2028 and more, which
    are ordinary characters inside a text. "\\r\\n" is one line ending; a final
    line ending does not start an empty line; a leading byte-order mark is dropped.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            rest = ""
            while chunk := handle.read(1 << 20):
                lines = (rest + chunk).split("\n")
                rest = lines.pop()
                yield from (line.removesuffix("\r") for line in lines)
            if rest:
                yield rest
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text: {exc}.") from None


def _column_index(path: Path, names: list[Any], name: str, option: str) -> int:
    if name not in names:
        raise ValueError(f"{path} has no column {name!r} ({option}); its columns are {names}.")
    if names.count(name) > 1:
        raise ValueError(f"{path} has {names.count(name)} columns named {name!r} ({option}).")
    return names.index(name)


def _tsv_rows(path: Path, column: str, id_column: str | None) -> Iterator[tuple[list, Any]]:
    # Read by hand rather than with pandas: rows end exactly where .txt lines do, and
    # quotes are kept as written (STSb-style files quote nothing but contain quotes).
    lines = _lines(path)
    header = next(lines, None)
    if header is None:
        raise ValueError(f"{path} is empty; a .tsv input starts with a header line.")
    fields = header.split("\t")
    text_at = _column_index(path, fields, column, "--column")
    id_at = None if id_column is None else _column_index(path, fields, id_column, "--id-column")
    number = 1
    for block in _chunked(lines):
        rows = [line.split("\t") for line in block]
        for row in rows:
            number += 1
            if len(row) != len(fields):
                raise ValueError(
                    f"{path} line {number} has {len(row)} tab-separated fields; its header "
                    f"line has {len(fields)}. Quotes do not group fields in a .tsv input."
                )
        ids = None if id_at is None else [row[id_at] for row in rows]
        yield [row[text_at] or None for row in rows], ids


def _frame_rows(path: Path, column: str, id_column: str | None) -> Iterator[tuple[list, Any]]:
    if path.suffix.lower() == ".csv":
        import pandas as pd

        # Every cell is text and only an empty cell is missing: "NA", "None" or "007"
        # stay as written, and a blank line is a row of empty cells, not skipped.
        options = dict(dtype=str, keep_default_na=False, na_values=[""], skip_blank_lines=False)
        names = list(pd.read_csv(path, nrows=0, **options).columns)
        frames = pd.read_csv(path, chunksize=_BLOCK_ROWS, **options)
    else:
        import pyarrow.parquet as pq

        source = pq.ParquetFile(path)
        # The columns pandas would show (a saved index is not one of them).
        saved = (source.schema_arrow.pandas_metadata or {}).get("index_columns", [])
        index = {name for name in saved if isinstance(name, str)}  # a RangeIndex is a dict
        names = [name for name in source.schema_arrow.names if name not in index]
        frames = (b.to_pandas() for b in source.iter_batches(batch_size=_BLOCK_ROWS))
    text_at = _column_index(path, names, column, "--column")
    id_at = None if id_column is None else _column_index(path, names, id_column, "--id-column")
    for frame in frames:
        frame = frame.reset_index(drop=True)
        texts = as_texts(
            frame[names[text_at]], what=f"column {column!r} of {path}", allow_missing=True
        )
        yield texts, None if id_at is None else frame[names[id_at]]


def _open_input(path: Path, column: str | None, id_column: str | None) -> _Input:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        if column is not None or id_column is not None:
            raise ValueError(
                f"--column and --id-column apply to {', '.join(_TABLE_SUFFIXES)} inputs, "
                f"not to {path.name}."
            )
        return _Input(path, None, None, first_line=1)
    if column is None:
        raise ValueError(f"{path} is a {suffix[1:]} file: name its text column with --column.")
    return _Input(path, column, id_column, first_line=2 if suffix == ".tsv" else None)


def _count_rows(data: _Input, refuse_missing: bool) -> int:
    """Read the whole input once, checking it; the number of rows.

    With ``refuse_missing``, raise naming the rows when a text is missing.
    """
    rows, missing, n_missing = 0, [], 0
    for block in data.blocks():
        gaps = [block.start + i for i, text in enumerate(block.texts) if text is None]
        missing += gaps[: 5 - len(missing)]
        n_missing += len(gaps)
        rows += len(block.texts)
    if refuse_missing and n_missing:
        where = ", ".join(
            f"row {i}" + (f" (line {i + data.first_line})" if data.first_line is not None else "")
            for i in missing
        )
        more = f" and {n_missing - 5} more" if n_missing > 5 else ""
        what = (
            "empty lines"
            if data.column is None
            else f"empty or null cells of column {data.column!r}"
        )
        raise ValueError(
            f"{data.path} has {n_missing} missing text(s) ({what}) at {where}{more}; "
            "rows count from 0 after any header. Remove or fill them, or pass --missing empty "
            '(encode them as "") or --missing zero (all-zero embeddings).'
        )
    return rows


def _check_paths(args: argparse.Namespace, source: Path, output: Path) -> None:
    """Refuse, before anything is loaded or encoded, what cannot end in a written file."""
    if source.suffix.lower() not in _INPUT_SUFFIXES:
        raise ValueError(
            f"INPUT {source} must end in one of {', '.join(_INPUT_SUFFIXES)} (any case)."
        )
    if output.suffix.lower() not in _OUTPUT_SUFFIXES:
        raise ValueError(
            f"--output {output} must end in one of {', '.join(_OUTPUT_SUFFIXES)} (any case)."
        )
    if args.id_column is not None and output.suffix.lower() == ".npy":
        raise ValueError(
            f"--id-column needs a .csv or .parquet output; {output} holds only the embeddings "
            "(its rows are in input order)."
        )
    if not output.parent.is_dir():
        raise ValueError(f"--output {output}: the folder {output.parent} does not exist.")
    if output.exists():
        if output.is_dir():
            raise ValueError(f"--output {output} is a folder; expected a file name.")
        if source.exists() and os.path.samefile(source, output):
            raise ValueError(f"--output {output} is the input file {source}; choose another name.")
        if not args.overwrite:
            raise ValueError(f"--output {output} exists; pass --overwrite to replace it.")


def _check_dependencies(path: Path, role: str) -> None:
    """Raise ImportError when the format of ``path`` needs a package that is not installed."""
    suffix = path.suffix.lower()
    for alternatives in _FORMAT_NEEDS.get(suffix, ()):
        if not any(_importable(name) for name in alternatives):
            raise ImportError(
                f"{role} {path} is a {suffix} file, which needs {' or '.join(alternatives)}; "
                f"not installed: pip install 'skembed[{_FORMAT_EXTRAS[suffix]}]' (or pip "
                f"install {alternatives[0]})."
            )


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _partial_name(target: Path, pid: int) -> str:
    # The host is part of the name: on a shared file system a process id means nothing
    # elsewhere, so only this machine's leftovers are ever judged dead.
    return f".{target.name}.{socket.gethostname()}.{pid}.partial"


def _remove_dead_partials(target: Path) -> None:
    """Delete the partial files of ``target`` whose writer on this machine no longer runs."""
    from .cache._store import process_running

    prefix, suffix = _partial_name(target, 0).rsplit(".0.", 1)
    for leftover in target.parent.glob(f"{glob.escape(prefix)}.*.{suffix}"):
        pid = leftover.name[len(prefix) + 1 : -len(suffix) - 1]
        if pid.isdigit() and int(pid) != os.getpid() and not process_running(int(pid)):
            leftover.unlink(missing_ok=True)


class _Writer:
    """Writes the output file block by block into a partial file, renamed when complete.

    An ``.npy`` gets its header first, for the row count that a first pass over the
    input counted, then the rows as they come; a ``.csv`` is appended to; a
    ``.parquet`` gets a row group per block.
    """

    def __init__(
        self, handle: IO[bytes], suffix: str, rows: int, columns: list[str], id_name: str
    ) -> None:
        self.handle, self.suffix, self.columns, self.id_name = handle, suffix, columns, id_name
        self.parquet: Any = None
        if suffix == ".npy":
            header = {"descr": "<f4", "fortran_order": False, "shape": (rows, len(columns))}
            np.lib.format.write_array_header_1_0(handle, header)

    def write(self, block: _Block, embeddings: np.ndarray) -> None:
        if self.suffix == ".npy":
            self.handle.write(np.ascontiguousarray(embeddings, dtype="<f4").tobytes())
            return
        import pandas as pd

        frame = pd.DataFrame(embeddings, columns=self.columns)
        ids = block.ids
        if ids is None:
            ids = np.arange(block.start, block.start + len(frame))
        frame.insert(0, self.id_name, ids)
        if self.suffix == ".csv":
            frame.to_csv(self.handle, index=False, header=block.start == 0)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self.parquet is None:
            self.parquet = pq.ParquetWriter(self.handle, table.schema)
        self.parquet.write_table(table.cast(self.parquet.schema))

    def close(self) -> None:
        if self.parquet is not None:
            self.parquet.close()


@contextmanager
def _written(output: Path) -> Iterator[IO[bytes]]:
    """A file to write ``output`` into, whole or not at all: a failed write leaves nothing.

    A writer killed outright (SIGKILL) cannot clean up: the next write of the same output
    on the same machine deletes what such writers left.
    """
    target = output.resolve()  # write through a symlink, as opening the path would
    _remove_dead_partials(target)
    partial = target.with_name(_partial_name(target, os.getpid()))
    try:
        with open(partial, "wb") as handle:
            yield handle
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


@contextmanager
def _no_process_cache() -> Iterator[None]:
    """The in-process cache off: it would hold every row of a long input."""
    from .cache import cache_info, set_cache_limit

    limit = cache_info()["max_bytes"]
    set_cache_limit(0)
    try:
        yield
    finally:
        set_cache_limit(limit)


def _encode(args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from .encoder import work_counts

    source, output = Path(args.input), Path(args.output)
    _check_paths(args, source, output)
    _check_dependencies(source, "INPUT")
    _check_dependencies(output, "--output")
    data = _open_input(source, args.column, args.id_column)
    rows = _count_rows(data, refuse_missing=not allows_missing(args.missing))
    embedder = _embedder(
        args,
        normalize_embeddings=args.normalize,
        missing=args.missing,
        memory=args.memory,
        show_progress_bar=False,
    )
    # The estimator's own names for this input: "<column>_<i>" for a table's column, as
    # SentenceEmbedder().fit(frame[[column]]) gives; a .txt has no column name.
    input_features = None if args.column is None else [args.column]
    columns = [str(c) for c in embedder.get_feature_names_out(input_features)]
    id_name = args.id_column or "row"
    suffix = output.suffix.lower()
    if suffix != ".npy" and id_name in columns:
        raise ValueError(
            f"--id-column {id_name!r} is also the name of an embedding column of {output}."
        )
    before = work_counts()["texts_encoded"]
    bar = tqdm(total=rows, desc="Encoding", unit="text", disable=not _show_progress(args))
    # The rows truncated, told once at the end, numbered in the file: the first ones, and
    # how many (a list of them all would grow with the input).
    cut: list[int] = []
    n_cut = 0
    with bar, _no_process_cache(), _written(output) as handle:
        writer = _Writer(handle, suffix, rows, columns, id_name)
        written = 0
        for block in data.blocks():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", TruncationWarning)
                embeddings = embedder.transform(block.texts)
            for warning in caught:
                if isinstance(warning.message, TruncationWarning):
                    positions = warning.message.positions
                    cut += [block.start + i for i in positions[: _KEPT_POSITIONS - len(cut)]]
                    n_cut += len(positions)
                else:
                    warnings.warn_explicit(
                        warning.message, warning.category, warning.filename, warning.lineno
                    )
            writer.write(block, embeddings)
            written += len(block.texts)
            bar.update(len(block.texts))
        writer.close()
        if written != rows:
            raise ValueError(f"{source} changed while it was read ({rows} rows, then {written}).")
    if n_cut:
        warnings.warn(truncation_warning(cut, rows, embedder.max_seq_length_, n_cut), stacklevel=1)
    encoded = work_counts()["texts_encoded"] - before
    print(
        f"wrote {rows} x {len(columns)} embeddings to {output} ({encoded} texts encoded)",
        file=sys.stderr,
    )


def _evaluate(args: argparse.Namespace) -> None:
    from ._evaluation import evaluate_sts
    from .datasets import iter_stsb

    # The pandas-free reader: a plain install evaluates.
    rows_read = list(iter_stsb(args.split))
    pairs = [(first, second) for first, second, _ in rows_read]
    gold = np.array([score for _, _, score in rows_read])
    figures = evaluate_sts(_embedder(args), pairs, gold)
    rows = [[100 * f["spearman"], 100 * f["pearson"]] for f in figures.values()]
    print(f"STSb {args.split} ({len(pairs)} pairs), {args.model}, x 100")
    print(_table(list(figures), ["Spearman", "Pearson"], np.array(rows), decimals=2))


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"model folder or name (default: {DEFAULT_MODEL})"
    )
    common.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, mps or all (default: best available)"
    )
    common.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPE_CHOICES,
        help="precision (default: auto)",
    )
    common.add_argument(
        "--batch-size", type=int, default=None, help="texts per batch (default: by device)"
    )
    common.add_argument(
        "--long-text",
        choices=LONG_TEXT_POLICIES,
        default="truncate",
        help="a text longer than the model's window: 'truncate' it, or 'chunk' it into windows "
        "whose embeddings are combined (default: truncate)",
    )
    common.add_argument(
        "--chunk-tokens",
        type=int,
        default=None,
        metavar="N",
        help="tokens per window with --long-text chunk (default: the model's limit)",
    )
    common.add_argument(
        "--chunk-overlap",
        type=int,
        default=0,
        metavar="N",
        help="tokens two consecutive windows share (default: 0)",
    )
    common.add_argument(
        "--chunk-pooling",
        choices=CHUNK_POOLINGS,
        default="mean",
        help="how window embeddings are combined: token-weighted 'mean', 'max' or 'first' "
        "(default: mean)",
    )
    common.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="no progress bar (default: a progress bar when stderr is a terminal)",
    )

    parser = argparse.ArgumentParser(
        prog="skembed",
        description="Sentence embeddings and semantic similarity, scikit-learn style.",
    )
    parser.add_argument("--version", action="version", version=f"skembed {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    similarity = commands.add_parser(
        "similarity",
        parents=[common],
        help="print the similarity matrix of some texts",
        description="Print the similarity matrix of the given texts as an aligned table.",
    )
    similarity.add_argument("texts", nargs="+", metavar="TEXT")
    similarity.add_argument(
        "--metric",
        choices=SimilarityFunction.possible_values(),
        default=None,
        help="similarity function (default: the model's, else cosine)",
    )
    similarity.set_defaults(run=_similarity)

    encode = commands.add_parser(
        "encode",
        parents=[common],
        help="encode a file of texts",
        description=(
            "Encode a text file (one text per line) or one column of a CSV, TSV or Parquet "
            "table. Lines of .txt and .tsv files end at \\n (\\r\\n counts as one line "
            "ending; any other character, \\r included, is part of the text). A .tsv has a "
            "header line and no quoting: quotes are kept as written. A .csv is standard CSV. "
            "An empty line of a .txt, or an empty or null cell of a table, is a missing text "
            "(see --missing). The output has one row per input row, in input order: OUT.npy "
            "holds only the (rows, dimensions) float32 array; OUT.csv and OUT.parquet start "
            "with an id column (the input row number from 0, named 'row', or --id-column) "
            "followed by one column per dimension, named as SentenceEmbedder's "
            "get_feature_names_out names them (COLUMN_0, COLUMN_1, ... for --column COLUMN; "
            "sentenceembedder0, ... for a .txt). OUT is written exactly at the path given, "
            "whole or not at all; an existing OUT is replaced only with --overwrite, and "
            "never when it is the input file."
        ),
    )
    encode.add_argument(
        "input", metavar="INPUT", help="a .txt file, or a .csv/.tsv/.parquet file with --column"
    )
    encode.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="OUT",
        help="OUT.npy, OUT.parquet or OUT.csv (suffix in any case)",
    )
    encode.add_argument("--column", default=None, help="the text column of a table input")
    encode.add_argument(
        "--id-column",
        default=None,
        metavar="NAME",
        help="copy this column of a table input into a .csv/.parquet output as its first "
        "column (default: the input row number, from 0, as column 'row')",
    )
    encode.add_argument(
        "--missing",
        choices=MISSING_POLICIES,
        default=_DEFAULT_MISSING,
        help="a missing text (empty line or cell): 'error' stops before encoding and names "
        "the rows, 'empty' encodes it as \"\", 'zero' gives an all-zero embedding "
        f"(default: {_DEFAULT_MISSING})",
    )
    encode.add_argument(
        "--overwrite", action="store_true", help="replace OUT if it exists (default: refuse)"
    )
    encode.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")
    encode.add_argument(
        "--memory",
        default=None,
        metavar="DIR",
        help="keep every embedding in a store in DIR as it is encoded: a run stopped in the "
        "middle (even killed) and run again encodes only the rows not yet stored, and "
        "another run on the same texts and settings encodes nothing (default: no store)",
    )
    encode.set_defaults(run=_encode)

    evaluate = commands.add_parser(
        "evaluate",
        parents=[common],
        help="evaluate on a benchmark",
        description="Spearman and Pearson x 100 of each similarity function on a benchmark.",
    )
    evaluate.add_argument(
        "benchmark", choices=["stsb"], help="the benchmark (bundled with skembed)"
    )
    evaluate.add_argument("--split", choices=SPLITS, default="test")
    evaluate.set_defaults(run=_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``skembed`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit code: 0 on success, 1 on an error (reported on one line of
        stderr), 2 on a usage error.
    """
    args = _parser().parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        print(f"skembed: error: --batch-size must be >= 1, got {args.batch_size}", file=sys.stderr)
        return 2
    from transformers.utils import logging as transformers_logging

    # The command owns the process: keep stderr for its own progress bar and errors.
    transformers_logging.disable_progress_bar()
    try:
        args.run(args)
    except (OSError, ValueError, TypeError, ImportError) as exc:
        message = " ".join(str(exc).split())
        print(f"skembed: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
