"""Embed a Ray Dataset on a pool of actors, each loading the model once."""

import numpy as np
import pandas as pd
import ray
from ray.data import ActorPoolStrategy

from skembed import SentenceEmbedder
from skembed.parallel import BatchEmbedder

if __name__ == "__main__":
    frame = pd.DataFrame(
        {"id": [101, 205, 307, 409], "text": ["Great phone", "Battery died", "Works", "Cracked"]}
    )
    embedder = SentenceEmbedder(device="cpu", dtype="float32").fit(frame["text"])
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        # Materialized before the actors start: its tasks would otherwise wait for the CPUs
        # the actors hold. At most as many blocks in flight as actor slots.
        dataset = ray.data.from_pandas(frame).repartition(2).materialize()
        embedded = dataset.map_batches(
            BatchEmbedder,  # the class: each actor builds one and keeps the model
            fn_constructor_kwargs={"embedder": embedder, "column": "text", "output": "column"},
            batch_format="numpy",
            compute=ActorPoolStrategy(size=2),
            num_cpus=1,
        ).to_pandas()
    finally:
        ray.shutdown()

    embedded = embedded.sort_values("id")
    vectors = np.stack(embedded["embedding"].to_numpy())
    print(vectors.shape, vectors.dtype)
    np.testing.assert_allclose(vectors, embedder.transform(frame["text"]), atol=1e-6)
