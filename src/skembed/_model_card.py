"""The short model card (README.md) that ``SentenceEmbedder.save`` writes."""

from __future__ import annotations

from collections.abc import Mapping


def model_card(
    *,
    source: str,
    pooling: tuple[str, ...],
    similarity_fn_name: str,
    max_seq_length: int,
    n_features_out: int,
    truncate_dim: int | None,
    evaluation: Mapping[str, Mapping[str, float]] | None,
    evaluated_on: str | None,
) -> str:
    """Markdown text describing a saved model and, when measured, its STS figures."""
    lines = [
        "---",
        "library_name: sentence-transformers",
        "tags:",
        "- sentence-transformers",
        "- sentence-similarity",
        "- skembed",
        "---",
        "",
        "# Sentence embedding model",
        "",
        f"Saved by skembed from `{source}`.",
        "",
        "| setting | value |",
        "|---|---|",
        f"| pooling | {', '.join(pooling) or 'none'} |",
        f"| similarity function | {similarity_fn_name} |",
        f"| max_seq_length | {max_seq_length} |",
        f"| embedding dimensions | {n_features_out} |",
        f"| truncate_dim | {truncate_dim if truncate_dim is not None else 'none'} |",
        "",
        "Load it with `skembed.SentenceEmbedder(path)` or "
        "`sentence_transformers.SentenceTransformer(path)`.",
    ]
    if evaluation:
        lines += [
            "",
            f"## Evaluation: {evaluated_on or 'STS pairs'}",
            "",
            "Correlations (x 100) of each similarity function's pair scores with the gold "
            "scores, from `skembed.evaluate_sts`.",
            "",
            "| metric | Spearman | Pearson |",
            "|---|---|---|",
        ]
        lines += [
            f"| {metric} | {100 * f['spearman']:.2f} | {100 * f['pearson']:.2f} |"
            for metric, f in evaluation.items()
        ]
    return "\n".join(lines) + "\n"
