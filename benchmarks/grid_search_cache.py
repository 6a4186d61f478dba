"""Grid search over the metric vs one plain encoding pass: the embedding cache at work.

Runs, in one process, on the first 900 STSb train pairs (label: score >= 3):
1. one plain ``fit_transform`` over the unique sentences of those pairs (cold cache);
2. ``GridSearchCV(Pipeline([PairedSimilarity, LogisticRegression]))`` over the four metrics,
   cv=3, n_jobs=None, starting from a cold cache;
and prints both times and their ratio (median of --repeats runs).

    python benchmarks/grid_search_cache.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from skembed import PairedSimilarity, SentenceEmbedder
from skembed.cache import clear_cache
from skembed.datasets import load_stsb

os.environ.setdefault("HF_HUB_OFFLINE", "1")
METRICS = ["cosine", "dot", "euclidean", "manhattan"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    args = parser.parse_args()

    train = load_stsb("train").head(900)
    pairs, labels = train[["sentence1", "sentence2"]], (train["score"] >= 3).astype(int)
    unique = list(dict.fromkeys(train["sentence1"].tolist() + train["sentence2"].tolist()))
    SentenceEmbedder(args.model, device="cpu").fit()  # load the model outside the timings

    plain, search_times = [], []
    for _ in range(args.repeats):
        clear_cache()
        start = time.perf_counter()
        SentenceEmbedder(args.model, device="cpu").fit_transform(unique)
        plain.append(time.perf_counter() - start)

        clear_cache()
        start = time.perf_counter()
        search = GridSearchCV(
            Pipeline(
                [
                    ("sim", PairedSimilarity(SentenceEmbedder(args.model, device="cpu"))),
                    ("clf", LogisticRegression()),
                ]
            ),
            {"sim__embedder__similarity_fn_name": METRICS},
            cv=3,
        ).fit(pairs, labels)
        search_times.append(time.perf_counter() - start)

    p, s = statistics.median(plain), statistics.median(search_times)
    print(
        f"unique sentences: {len(unique)}  pairs: {len(pairs)}  candidates: "
        f"{len(search.cv_results_['params'])}  best accuracy: {search.best_score_:.4f}"
    )
    print(f"plain fit_transform, median of {args.repeats}: {p:.2f} s")
    print(f"grid search (12 fits), median of {args.repeats}: {s:.2f} s")
    print(f"ratio grid search / plain: {s / p:.2f}x")


if __name__ == "__main__":
    main()
