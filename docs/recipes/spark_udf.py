"""Embed a Spark DataFrame column with predict_batch_udf (not executed in CI: no Spark there)."""

from pyspark.ml.functions import predict_batch_udf
from pyspark.sql import SparkSession
from pyspark.sql.types import ArrayType, FloatType

from skembed import SentenceEmbedder
from skembed.parallel import BatchEmbedder

if __name__ == "__main__":
    spark = SparkSession.builder.master("local[2]").getOrCreate()
    frame = spark.createDataFrame(
        [(101, "Great phone"), (205, "Battery died"), (307, "Works")], ["id", "text"]
    )
    embedder = SentenceEmbedder(device="cpu", dtype="float32").fit(["warm-up"])
    embed = BatchEmbedder(embedder, output="array")
    # make_predict_fn runs once per Python worker: warm_up loads the model there and returns
    # the callable, which maps a numpy array of texts to a float32 (n, 384) array.
    embed_udf = predict_batch_udf(embed.warm_up, return_type=ArrayType(FloatType()), batch_size=256)
    rows = frame.withColumn("embedding", embed_udf("text")).orderBy("id").collect()
    print(len(rows), len(rows[0]["embedding"]))
    spark.stop()
