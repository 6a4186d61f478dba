"""Embed a text column on a Dask cluster: lazy, computed on the workers."""

import dask.dataframe as dd
import numpy as np
import pandas as pd
from distributed import Client, LocalCluster

from skembed import SentenceEmbedder
from skembed.encoder import work_counts
from skembed.parallel import BatchEmbedder

if __name__ == "__main__":
    reviews = pd.DataFrame(
        {"text": ["Great phone", "Battery died in a day", "Works as advertised", "Cracked"]},
        index=[101, 205, 307, 409],
    )
    # Fitted in the driver: it records the model's fingerprint; workers get ~1 KB, no weights.
    embedder = SentenceEmbedder(device="cpu", dtype="float32").fit(reviews["text"])
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        texts = dd.from_pandas(reviews, npartitions=2)["text"]
        client.run(BatchEmbedder(embedder).warm_up)  # optional: every worker loads the model now

        embeddings = embedder.transform(texts)  # a lazy dask DataFrame: text_0 ... text_383
        result = embeddings.compute()

        # The same through map_partitions, the route for any per-partition pipeline.
        embed = BatchEmbedder(embedder)
        mapped = texts.map_partitions(embed, meta=embed.meta(texts._meta.index)).compute()

        loads = [counts["models_loaded"] for counts in client.run(work_counts).values()]

    print(result.shape, result.dtypes.iloc[0], list(result.index), loads)
    np.testing.assert_allclose(result.to_numpy(), embedder.transform(reviews["text"]), atol=1e-6)
    pd.testing.assert_frame_equal(mapped, result)
    assert loads == [1, 1]
