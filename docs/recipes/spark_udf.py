"""Embed a Spark DataFrame column: predict_batch_udf, and mapInPandas over an iterator."""

import os
import sys

import numpy as np
from pyspark.ml.functions import predict_batch_udf
from pyspark.sql import SparkSession
from pyspark.sql.types import ArrayType, FloatType

from skembed import SentenceEmbedder
from skembed.datasets import load_stsb
from skembed.encoder import work_counts
from skembed.parallel import BatchEmbedder

if __name__ == "__main__":
    os.environ["PYSPARK_PYTHON"] = sys.executable  # the workers run this interpreter
    dev = load_stsb("dev")
    texts = [*dev["sentence1"], *dev["sentence2"]]  # 3,000 sentences
    # Fitted in the driver: it records the model's fingerprint; tasks carry ~1 KB, no weights.
    embedder = SentenceEmbedder(device="cpu", dtype="float32").fit(texts)
    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    frame = spark.createDataFrame(list(enumerate(texts)), ["id", "text"]).repartition(4)

    # 1. predict_batch_udf: make_predict_fn runs once per Python worker; warm_up loads the
    # model there and returns the callable, which maps a numpy array of texts to a float32
    # (n, 384) array.
    embed = BatchEmbedder(embedder, output="array")
    embed_udf = predict_batch_udf(embed.warm_up, return_type=ArrayType(FloatType()), batch_size=256)
    rows = frame.withColumn("embedding", embed_udf("text")).orderBy("id").collect()
    by_udf = np.array([row["embedding"] for row in rows], dtype=np.float32)

    # 2. mapInPandas: an iterator of pandas frames per partition; the model is loaded once
    # per Python worker process, whatever the number of partitions it runs.
    def embed_partition(batches):
        embed = BatchEmbedder(embedder, output="array").warm_up()
        for batch in batches:
            yield batch.assign(
                embedding=list(embed(batch["text"])),
                pid=os.getpid(),
                models_loaded=work_counts()["models_loaded"],
            )

    schema = "id long, text string, embedding array<float>, pid int, models_loaded int"
    result = frame.mapInPandas(embed_partition, schema).toPandas().sort_values("id")
    by_map = np.stack(result["embedding"].to_numpy()).astype(np.float32)
    loads = result.groupby("pid")["models_loaded"].max()
    spark.stop()

    print(by_udf.shape, by_map.shape, f"most model loads in one Python worker: {loads.max()}")
    expected = embedder.transform(texts)
    np.testing.assert_allclose(by_udf, expected, atol=1e-6)
    np.testing.assert_allclose(by_map, expected, atol=1e-6)
    assert loads.max() == 1
