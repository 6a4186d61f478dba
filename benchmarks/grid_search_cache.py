"""Grid search over the metric vs one plain encoding pass: the embedding caches at work.

Runs on the first 900 STSb train pairs (label: score >= 3):
1. one plain ``fit_transform`` over the unique sentences of those pairs (cold cache);
2. ``GridSearchCV(Pipeline([PairedSimilarity, LogisticRegression]))`` over the four metrics,
   cv=3, n_jobs=None, starting from a cold cache;
3. with ``--n-jobs N`` (N > 1): the same search with ``n_jobs=1`` and with ``n_jobs=N``, each
   with ``memory=`` a fresh store and no pre-fill, the in-process caches of the parent and of
   every pool process cleared first. It counts the texts every process encoded (parent and
   pool), prints encodings per unique sentence and the time against ``n_jobs=1``.

Prints medians of --repeats runs and their ratios.

    python benchmarks/grid_search_cache.py --repeats 3
    python benchmarks/grid_search_cache.py --repeats 3 --n-jobs 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time

from joblib import Parallel, delayed
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from skembed import PairedSimilarity, SentenceEmbedder
from skembed._device import cpu_features
from skembed.cache import clear_cache
from skembed.datasets import load_stsb
from skembed.encoder import work_counts

os.environ.setdefault("HF_HUB_OFFLINE", "1")
METRICS = ["cosine", "dot", "euclidean", "manhattan"]


def search(model: str, pairs, labels, n_jobs: int | None, memory=None) -> GridSearchCV:
    return GridSearchCV(
        Pipeline(
            [
                ("sim", PairedSimilarity(SentenceEmbedder(model, device="cpu", memory=memory))),
                ("clf", LogisticRegression()),
            ]
        ),
        {"sim__embedder__similarity_fn_name": METRICS},
        cv=3,
        n_jobs=n_jobs,
    ).fit(pairs, labels)


def _clear_and_count(barrier, model: str) -> tuple[int, int]:
    # Every pool process holds one of these at once, so each answers once. The model is loaded
    # here (once per process): loky replaces a worker whose memory grows by 300 MB after its
    # first task, which loading the model in the search would otherwise do, losing its counts.
    barrier.wait(timeout=300)
    SentenceEmbedder(model, device="cpu").fit()
    clear_cache()
    return os.getpid(), work_counts()["texts_encoded"]


def pool_encoded(n_jobs: int, model: str) -> dict[int, int]:
    """Texts encoded so far by each process of joblib's (reused) pool; empties their caches."""
    if n_jobs == 1:
        return {}
    with multiprocessing.Manager() as manager:
        barrier = manager.Barrier(n_jobs)
        return dict(
            Parallel(n_jobs=n_jobs)(
                delayed(_clear_and_count)(barrier, model) for _ in range(n_jobs)
            )
        )


def shared_search(model: str, pairs, labels, n_jobs: int) -> tuple[float, int]:
    """Seconds and texts encoded by all processes, for one search on a fresh store."""
    before = pool_encoded(n_jobs, model)
    clear_cache()
    parent = work_counts()["texts_encoded"]
    with tempfile.TemporaryDirectory() as store:
        start = time.perf_counter()
        search(model, pairs, labels, n_jobs, memory=store)
        seconds = time.perf_counter() - start
    after = pool_encoded(n_jobs, model)
    if set(after) != set(before):
        raise RuntimeError(f"The pool's processes changed during the search: {before} {after}.")
    encoded = work_counts()["texts_encoded"] - parent
    return seconds, encoded + sum(after[pid] - before[pid] for pid in after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument(
        "--n-jobs", type=int, default=1, help="also time the search on this many processes"
    )
    args = parser.parse_args()

    train = load_stsb("train").head(900)
    pairs, labels = train[["sentence1", "sentence2"]], (train["score"] >= 3).astype(int)
    unique = list(dict.fromkeys(train["sentence1"].tolist() + train["sentence2"].tolist()))
    SentenceEmbedder(args.model, device="cpu").fit()  # load the model outside the timings
    print(f"CPU: {cpu_features()}  cores: {os.cpu_count()}")

    plain, search_times = [], []
    for _ in range(args.repeats):
        clear_cache()
        start = time.perf_counter()
        SentenceEmbedder(args.model, device="cpu").fit_transform(unique)
        plain.append(time.perf_counter() - start)

        clear_cache()
        start = time.perf_counter()
        result = search(args.model, pairs, labels, None)
        search_times.append(time.perf_counter() - start)

    p, s = statistics.median(plain), statistics.median(search_times)
    print(
        f"unique sentences: {len(unique)}  pairs: {len(pairs)}  candidates: "
        f"{len(result.cv_results_['params'])}  best accuracy: {result.best_score_:.4f}"
    )
    print(f"plain fit_transform, median of {args.repeats}: {p:.2f} s")
    print(f"grid search (12 fits), median of {args.repeats}: {s:.2f} s")
    print(f"ratio grid search / plain: {s / p:.2f}x")

    if args.n_jobs > 1:
        for n_jobs in (1, args.n_jobs):
            pool_encoded(
                n_jobs, args.model
            )  # start the pool (and load the model there) outside the timings
        runs: dict[int, list[tuple[float, int]]] = {1: [], args.n_jobs: []}
        for _ in range(args.repeats):
            for n_jobs in runs:
                runs[n_jobs].append(shared_search(args.model, pairs, labels, n_jobs))
        for n_jobs, measured in runs.items():
            seconds = statistics.median(t for t, _ in measured)
            per_text = [n / len(unique) for _, n in measured]
            print(
                f"memory= store, no pre-fill, n_jobs={n_jobs}: median {seconds:.2f} s, "
                f"encodings per unique sentence {', '.join(f'{x:.3f}' for x in per_text)}"
            )
        one = statistics.median(t for t, _ in runs[1])
        many = statistics.median(t for t, _ in runs[args.n_jobs])
        print(f"ratio n_jobs={args.n_jobs} / n_jobs=1 (time): {many / one:.2f}x")


if __name__ == "__main__":
    main()
