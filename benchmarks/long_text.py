"""Long documents: skembed truncate and chunk, against encoding the same windows as texts.

Documents are STSb train sentences joined until each reaches its drawn length (from
--min-tokens to --max-tokens tokens of the model's tokenizer). The windows are those
``long_text="chunk"`` cuts (``chunk_tokens`` = the model's limit, no overlap); each is
also written back as the text of its token span (decoded; tokenized again it may differ by
a token or so), and those window texts are encoded as separate texts by skembed and by the
reference library (batch 32). One process, the
contenders alternating, the embedding cache off; medians of --repeats runs. Prints the
CPU features, documents/s and tokens/s of each, and the ratios the acceptance asks for:
chunk's time over the window texts' (skembed) and the reference's time over chunk's.

    python benchmarks/long_text.py --docs 1000 --repeats 3
    python benchmarks/long_text.py --docs 50 --repeats 1        # a quick run
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from skembed import SentenceEmbedder, TruncationWarning
from skembed._device import cpu_features
from skembed.cache import set_cache_limit
from skembed.datasets import load_stsb
from skembed.encoder import resolve_model_folder


def documents(tokenizer, n: int, low: int, high: int, seed: int = 0) -> list[str]:
    """``n`` documents of joined STSb sentences, each of ``low`` to ``high`` tokens."""
    train = load_stsb("train")
    sentences = list(dict.fromkeys(train["sentence1"].tolist() + train["sentence2"].tolist()))
    lengths = [len(ids) - 2 for ids in tokenizer(sentences, verbose=False)["input_ids"]]
    rng = np.random.default_rng(seed)
    out = []
    for target in rng.integers(low, high + 1, size=n):
        parts, total = [], 0
        while total < target:
            i = int(rng.integers(len(sentences)))
            parts.append(sentences[i])
            total += lengths[i]
        out.append(" ".join(parts))
    return out


def window_texts(tokenizer, docs: list[str], window: int) -> tuple[list[str], int]:
    """The text of each window's span of tokens (no overlap), and the windows' tokens."""
    room = window - 2  # [CLS] and [SEP] come with every window
    texts, tokens = [], 0
    for ids in tokenizer(docs, add_special_tokens=False, verbose=False)["input_ids"]:
        for start in range(0, max(len(ids), 1), room):
            span = ids[start : start + room]
            texts.append(tokenizer.decode(span))
            tokens += len(span) + 2
    return texts, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--min-tokens", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    # Truncating is what the truncate contender measures; a window's text may also come back
    # a token or two longer than its span (decoding and tokenizing again is not exact).
    warnings.simplefilter("ignore", TruncationWarning)
    folder = resolve_model_folder(args.model)
    set_cache_limit(0)  # measure encoding, not the cache
    print(f"CPU: {cpu_features()}", flush=True)
    reference = SentenceTransformer(str(folder), device="cpu")
    tokenizer = reference.tokenizer
    truncate = SentenceEmbedder(folder, device="cpu").fit()
    chunk = SentenceEmbedder(folder, device="cpu", long_text="chunk").fit()
    window = chunk.chunk_tokens_
    docs = documents(tokenizer, args.docs, args.min_tokens, args.max_tokens)
    counts = truncate.count_tokens(docs)
    windows, window_tokens = window_texts(tokenizer, docs, window)
    n_chunks = len(chunk.transform_chunks(docs[:50])[1])  # a check of the cut, on a few
    assert n_chunks == len(window_texts(tokenizer, docs[:50], window)[0]), "windows differ"
    print(
        f"{len(docs)} documents of {int(counts.mean()):,} tokens on average "
        f"({counts.min():,}-{counts.max():,}), {len(windows):,} windows of <= {window} tokens",
        flush=True,
    )
    contenders = {
        "skembed truncate": (
            lambda: truncate.transform(docs),
            int(np.minimum(counts, window).sum()),
        ),
        "skembed chunk": (lambda: chunk.transform(docs), window_tokens),
        "skembed window texts": (lambda: truncate.transform(windows), window_tokens),
        "reference window texts": (lambda: reference.encode(windows, batch_size=32), window_tokens),
    }
    runs: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, (fn, _) in contenders.items():
            start = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - start)
    median = {name: statistics.median(seconds) for name, seconds in runs.items()}
    for name, (_, tokens) in contenders.items():
        print(
            f"{name:<24} {len(docs) / median[name]:9.1f} documents/s "
            f"{tokens / median[name]:10,.0f} tokens/s  (median of {args.repeats})"
        )
    print(
        f"chunk time / skembed window texts time: "
        f"{median['skembed chunk'] / median['skembed window texts']:.2f}x"
    )
    print(
        f"reference window texts time / chunk time: "
        f"{median['reference window texts'] / median['skembed chunk']:.2f}x"
    )


if __name__ == "__main__":
    main()
