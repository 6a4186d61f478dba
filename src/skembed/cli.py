"""The ``skembed`` command: similarity tables, encoding files, STSb evaluation."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .embedder import DEFAULT_MODEL, SentenceEmbedder
from .similarity import SimilarityFunction

__all__ = ["main"]

_OUTPUT_SUFFIXES = (".npy", ".parquet", ".csv")


def _embedder(args: argparse.Namespace, **params) -> SentenceEmbedder:
    return SentenceEmbedder(
        args.model,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        **params,
    ).fit()


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


def _read_texts(path: Path, column: str | None) -> list[str]:
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix in (".csv", ".parquet"):
        if column is None:
            raise ValueError(f"{path} is a {suffix[1:]} file: name its text column with --column.")
        frame = (
            pd.read_csv(path, keep_default_na=False) if suffix == ".csv" else pd.read_parquet(path)
        )
        if column not in frame.columns:
            raise ValueError(
                f"{path} has no column {column!r}; its columns are {list(frame.columns)}."
            )
        return frame[column].tolist()
    if column is not None:
        raise ValueError(f"--column applies to .csv and .parquet inputs, not to {path.name}.")
    return path.read_text(encoding="utf-8").splitlines()


def _encode(args: argparse.Namespace) -> None:
    import pandas as pd

    output = Path(args.output)
    if output.suffix.lower() not in _OUTPUT_SUFFIXES:
        raise ValueError(f"--output {output} must end in one of {', '.join(_OUTPUT_SUFFIXES)}.")
    texts = _read_texts(Path(args.input), args.column)
    embedder = _embedder(args, show_progress_bar=True, normalize_embeddings=args.normalize)
    embeddings = embedder.transform(texts)
    if output.suffix.lower() == ".npy":
        np.save(output, embeddings)
    else:
        frame = pd.DataFrame(embeddings, columns=[str(c) for c in embedder.get_feature_names_out()])
        if output.suffix.lower() == ".csv":
            frame.to_csv(output, index=False)
        else:
            frame.to_parquet(output, index=False)
    print(
        f"wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings to {output}",
        file=sys.stderr,
    )


def _evaluate(args: argparse.Namespace) -> None:
    from scipy.stats import pearsonr, spearmanr

    from .datasets import load_stsb

    frame = load_stsb(args.split)
    pairs, gold = frame[["sentence1", "sentence2"]], frame["score"].to_numpy()
    embedder = _embedder(args)
    rows = []
    for metric in SimilarityFunction.possible_values():
        scores = embedder.set_params(similarity_fn_name=metric).pair_similarity(pairs)
        rows.append(
            [100 * spearmanr(scores, gold).statistic, 100 * pearsonr(scores, gold).statistic]
        )
    print(f"STSb {args.split} ({len(frame)} pairs), {args.model}, x 100")
    metrics = SimilarityFunction.possible_values()
    print(_table(metrics, ["Spearman", "Pearson"], np.array(rows), decimals=2))


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
        choices=["auto", "float32", "float16", "bfloat16"],
        help="precision (default: auto)",
    )
    common.add_argument(
        "--batch-size", type=int, default=None, help="texts per batch (default: by device)"
    )

    parser = argparse.ArgumentParser(
        prog="skembed",
        description="Sentence embeddings and semantic similarity, scikit-learn style.",
    )
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
        description="Encode a text file (one text per line) or a column of a CSV/Parquet file.",
    )
    encode.add_argument(
        "input", metavar="INPUT", help="a .txt file, or .csv/.parquet with --column"
    )
    encode.add_argument("--output", "-o", required=True, help="OUT.npy, OUT.parquet or OUT.csv")
    encode.add_argument("--column", default=None, help="the text column of a CSV/Parquet input")
    encode.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")
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
    evaluate.add_argument("--split", choices=["train", "dev", "test"], default="test")
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
