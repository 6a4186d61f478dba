"""Scaling out: BatchEmbedder, lazy Dask transforms, stores that spare workers the model."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import sentences

from skembed import SentenceEmbedder
from skembed.cache import clear_cache
from skembed.encoder import release_models, work_counts
from skembed.parallel import BatchEmbedder, is_dask_collection

pytestmark = pytest.mark.usefixtures("fresh_cache")


@pytest.fixture
def texts() -> pd.Series:
    return pd.Series(sentences(30), index=np.arange(100, 130), name="text")


@pytest.fixture
def fitted(tiny_model, texts) -> SentenceEmbedder:
    return SentenceEmbedder(tiny_model, device="cpu").fit(texts)


def _delta(before: dict[str, int]) -> dict[str, int]:
    return {name: value - before[name] for name, value in work_counts().items()}


def test_batch_embedder_frame_keeps_index_and_feature_names(fitted, texts):
    out = BatchEmbedder(fitted)(texts.iloc[5:12])
    assert list(out.index) == list(texts.index[5:12])
    assert list(out.columns) == list(fitted.get_feature_names_out())
    assert (out.dtypes == np.float32).all()
    np.testing.assert_allclose(out.to_numpy(), fitted.transform(texts)[5:12], atol=1e-6)


def test_batch_embedder_array_and_column_outputs(fitted, texts):
    expected = fitted.transform(texts)
    array = BatchEmbedder(fitted, output="array")(texts.to_numpy())
    assert array.dtype == np.float32 and array.shape == expected.shape
    np.testing.assert_allclose(array, expected, atol=1e-6)
    # A Ray numpy batch: a dict of columns; the other columns are kept.
    batch = {"id": np.arange(30), "text": texts.to_numpy()}
    out = BatchEmbedder(fitted, column="text", output="column")(batch)
    assert list(out) == ["id", "text", "embedding"] and out["id"] is batch["id"]
    np.testing.assert_allclose(out["embedding"], expected, atol=1e-6)
    frame = BatchEmbedder(fitted, column="text", output="column")(texts.to_frame().assign(k=1))
    assert list(frame.columns) == ["text", "k", "embedding"]
    np.testing.assert_allclose(np.stack(frame["embedding"]), expected, atol=1e-6)


def test_batch_embedder_describes_its_output(fitted):
    meta = BatchEmbedder(fitted).meta(pd.Index([], dtype="int64"))
    assert meta.shape == (0, fitted.n_features_out_) and meta.index.dtype == "int64"
    assert list(meta.columns) == list(fitted.get_feature_names_out())
    assert BatchEmbedder(fitted, output="array").meta().shape == (0, fitted.n_features_out_)
    schema = BatchEmbedder(fitted).schema()
    assert schema.names == list(fitted.get_feature_names_out())
    assert str(schema.field(0).type) == "float"
    column = BatchEmbedder(fitted, column="text", output="column").schema()
    assert (
        str(column.field("embedding").type)
        == f"fixed_size_list<item: float>[{fitted.n_features_out_}]"
    )


def test_batch_embedder_refuses_what_it_cannot_embed(tiny_model, fitted, texts):
    with pytest.raises(TypeError, match="embedder must be a SentenceEmbedder, got str"):
        BatchEmbedder("model")
    with pytest.raises(Exception, match="not fitted"):
        BatchEmbedder(SentenceEmbedder(tiny_model))
    with pytest.raises(ValueError, match=r"output must be one of \['frame', 'array', 'column'\]"):
        BatchEmbedder(fitted, output="table")
    with pytest.raises(KeyError, match=r"no column 'body'; its columns are \['text', 'k'\]"):
        BatchEmbedder(fitted, column="body")(texts.to_frame().assign(k=1))
    with pytest.raises(ValueError, match=r"columns \['id', 'text'\]; give column="):
        BatchEmbedder(fitted)({"id": np.arange(2), "text": np.array(["a", "b"])})
    with pytest.raises(ValueError, match="fitted on \\['text'\\]"):
        BatchEmbedder(fitted)(texts.rename("review"))


def test_pickle_holds_no_weights_and_a_warm_store_spares_the_model(tiny_model, texts, tmp_path):
    fitted = SentenceEmbedder(tiny_model, device="cpu", memory=tmp_path).fit(texts)
    expected = fitted.transform(texts)  # fills the store
    embed = BatchEmbedder(fitted)
    payload = pickle.dumps(embed)
    assert len(payload) < 2_000
    # As on a fresh worker: no model in memory, no embedding in the process cache.
    release_models()
    clear_cache()
    before = work_counts()
    out = pickle.loads(payload)(texts)
    assert _delta(before) == {"models_loaded": 0, "texts_encoded": 0}
    np.testing.assert_array_equal(out.to_numpy(), expected)
    # A text the store lacks needs the model: loaded once, one text encoded.
    pickle.loads(payload)(pd.Series(["a new text"], name="text"))
    assert _delta(before) == {"models_loaded": 1, "texts_encoded": 1}


def test_changed_model_files_are_refused_before_the_store_serves(make_tiny_model, tmp_path):
    folder = make_tiny_model()
    fitted = SentenceEmbedder(folder, device="cpu", memory=tmp_path / "store").fit()
    fitted.transform(["stored text"])
    payload = pickle.dumps(fitted)
    config = folder / "config.json"
    config.write_text(config.read_text() + "\n")
    release_models()
    clear_cache()
    before = work_counts()
    with pytest.raises(ValueError, match="differ from those this estimator was fitted with"):
        pickle.loads(payload).transform(["stored text"])
    # Checked by hashing the files: nothing was loaded to find out.
    assert _delta(before) == {"models_loaded": 0, "texts_encoded": 0}


def test_warm_up_loads_the_model_once(fitted, tiny_model):
    embed = pickle.loads(pickle.dumps(BatchEmbedder(fitted)))
    release_models()
    before = work_counts()
    assert embed.warm_up() is embed
    embed.warm_up()
    assert _delta(before)["models_loaded"] == 1


# Dask without a cluster: what transform builds is lazy and checked in the driver.
dd = pytest.importorskip("dask.dataframe")
da = pytest.importorskip("dask.array")


def test_dask_transform_is_lazy_and_equals_in_process(fitted, texts):
    computed = []

    def part(bounds):
        computed.append(bounds)
        return texts.iloc[bounds[0] : bounds[1]]

    series = dd.from_map(part, [(0, 10), (10, 20), (20, 30)], divisions=None, meta=texts.iloc[:0])
    out = fitted.transform(series)
    assert is_dask_collection(out) and computed == []
    result = out.compute(scheduler="sync")
    assert len(computed) == 3
    assert list(result.index) == list(texts.index)
    assert list(result.columns) == list(fitted.get_feature_names_out())
    assert (result.dtypes == np.float32).all()
    np.testing.assert_allclose(result.to_numpy(), fitted.transform(texts), atol=1e-6)


def test_dask_arrays_and_frames(fitted, texts):
    expected = fitted.transform(texts)
    values = np.asarray(texts.tolist(), dtype=object)
    for array in (da.from_array(values, chunks=10), da.from_array(values[:, None], chunks=(7, 1))):
        out = fitted.transform(array)
        assert out.dtype == np.float32 and out.shape == expected.shape
        np.testing.assert_allclose(out.compute(scheduler="sync"), expected, atol=1e-6)
    frame = dd.from_pandas(texts.to_frame(), npartitions=2)
    np.testing.assert_allclose(fitted.transform(frame).compute().to_numpy(), expected, atol=1e-6)


def test_dask_inputs_refused_with_the_supported_route(fitted, texts):
    frame = dd.from_pandas(texts.to_frame().assign(k=1), npartitions=2)
    with pytest.raises(ValueError, match=r"columns \['text', 'k'\]; transform takes one column"):
        fitted.transform(frame)
    with pytest.raises(ValueError, match=r"shape \(4, 2\); transform takes texts of shape"):
        fitted.transform(da.from_array(np.full((4, 2), "a", dtype=object), chunks=2))
    with pytest.raises(ValueError, match="fitted on \\['text'\\]"):
        fitted.transform(dd.from_pandas(texts.rename("review"), npartitions=2))


def test_frame_output_of_a_dask_input_is_refused_not_computed(fitted, texts):
    series = dd.from_pandas(texts, npartitions=2)
    with pytest.raises(ValueError, match=r"set_output\(transform='pandas'\) would compute"):
        fitted.set_output(transform="pandas").transform(series)


def test_fit_on_a_dask_series_computes_nothing(tiny_model, texts):
    def part(_):
        raise AssertionError("fit computed a partition")

    series = dd.from_map(part, [0, 1], meta=texts.iloc[:0])
    fitted = SentenceEmbedder(tiny_model, device="cpu").fit(series)
    assert list(fitted.feature_names_in_) == ["text"] and fitted.n_features_in_ == 1


# On a cluster of two worker processes, as the acceptance asks.
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def _task_bytes(collection) -> list[int]:
    import cloudpickle

    graph = dict(collection.__dask_graph__())
    return [len(cloudpickle.dumps(task)) for task in graph.values()]


@pytest.mark.slow
def test_dask_cluster_transform_once_per_worker(client, tiny_model, texts):
    client.restart()
    fitted = SentenceEmbedder(tiny_model, device="cpu").fit(texts)
    expected = fitted.transform(texts)
    out = fitted.transform(dd.from_pandas(texts, npartitions=3))
    assert max(_task_bytes(out)) < 20_000
    result = out.compute()
    np.testing.assert_allclose(result.to_numpy(), expected, atol=1e-6)
    assert (result.dtypes == np.float32).all()
    assert list(result.index) == list(texts.index)
    assert list(result.columns) == list(fitted.get_feature_names_out())
    counts = client.run(work_counts)
    assert sum(c["texts_encoded"] for c in counts.values()) == len(texts)
    assert all(c["models_loaded"] <= 1 for c in counts.values()), counts
    # Again, with more partitions than workers: no worker loads it a second time.
    fitted.transform(dd.from_pandas(texts, npartitions=6)).compute()
    assert all(c["models_loaded"] <= 1 for c in client.run(work_counts).values())


@pytest.mark.slow
def test_dask_cluster_warm_store_spares_fresh_workers(client, tiny_model, tmp_path):
    # Texts no worker has cached yet: a text served by a process cache is not written to the store.
    texts = pd.Series(sentences(30, seed=7), name="text")
    fitted = SentenceEmbedder(tiny_model, device="cpu", memory=tmp_path).fit(texts)
    series = dd.from_pandas(texts, npartitions=3)
    first = fitted.transform(series).compute()
    client.restart()  # fresh worker processes: no model, no in-process cache
    again = fitted.transform(series).compute()
    counts = client.run(work_counts)
    assert all(c == {"models_loaded": 0, "texts_encoded": 0} for c in counts.values()), counts
    pd.testing.assert_frame_equal(again, first)


@pytest.mark.slow
def test_grid_search_on_the_dask_joblib_backend_scores_as_in_one_process(client, tiny_model):
    from joblib import parallel_backend
    from sklearn.model_selection import GridSearchCV

    pairs = pd.DataFrame({"a": sentences(24, 1, varied=True), "b": sentences(24, 2, varied=True)})
    gold = np.random.default_rng(0).random(24)
    grid = {"similarity_fn_name": ["cosine", "dot", "euclidean", "manhattan"]}

    def search(**options):
        estimator = SentenceEmbedder(tiny_model, device="cpu")
        return GridSearchCV(estimator, grid, cv=3, **options).fit(pairs, gold).cv_results_

    local = search()
    with parallel_backend("dask"):
        remote = search(n_jobs=2)
    for key in ["mean_test_score", *(f"split{i}_test_score" for i in range(3))]:
        np.testing.assert_array_equal(remote[key], local[key])
    assert sum(c["texts_encoded"] for c in client.run(work_counts).values()) > 0


@pytest.mark.slow
def test_worker_with_other_model_files_refuses(client, make_tiny_model, texts):
    folder = make_tiny_model()
    copy = folder.parent / "copy"
    shutil.copytree(folder, copy)
    fitted = SentenceEmbedder(copy, device="cpu").fit(texts)
    series = dd.from_pandas(texts, npartitions=2)
    # The same path holds other files by the time the workers read it.
    config = copy / "config.json"
    config.write_text(config.read_text() + "\n")
    with pytest.raises(ValueError, match="differ from those this estimator was fitted with"):
        fitted.transform(series).compute()


@pytest.mark.slow
def test_ray_data_map_batches_on_an_actor_pool(make_tiny_model, texts, monkeypatch):
    ray = pytest.importorskip("ray")
    from ray.data import ActorPoolStrategy

    # The model reaches the actors in Ray's runtime_env working_dir, named by a relative path.
    folder = make_tiny_model()
    monkeypatch.chdir(folder.parent)
    fitted = SentenceEmbedder(folder.name, device="cpu").fit(texts)
    expected = fitted.transform(texts)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"working_dir": str(folder.parent)},
    )
    try:
        # Uploaded at init: from now on only the actors' copies hold the model.
        folder.rename(folder.with_name("moved"))
        frame = pd.DataFrame({"id": texts.index, "text": texts.to_numpy()})
        # Materialized first: the repartition's tasks would otherwise wait for CPUs that the
        # actors hold (a deadlock on 2 CPUs).
        dataset = ray.data.from_pandas(frame).repartition(2).materialize()
        embedded = dataset.map_batches(
            BatchEmbedder,
            fn_constructor_kwargs={"embedder": fitted, "column": "text", "output": "column"},
            batch_format="numpy",
            compute=ActorPoolStrategy(size=2),
            num_cpus=1,
        ).to_pandas()
    finally:
        ray.shutdown()
    embedded = embedded.sort_values("id")
    assert list(embedded["id"]) == list(texts.index)
    vectors = np.stack(embedded["embedding"].to_numpy())
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, expected, atol=1e-6)


def _counts_at_barrier(barrier) -> tuple[int, dict[str, int]]:
    # Every worker of the pool holds one of these at once, so each worker answers once.
    import os

    barrier.wait(timeout=120)
    return os.getpid(), work_counts()


def loky_worker_counts(n_jobs: int) -> dict[int, dict[str, int]]:
    """``work_counts()`` of each process of joblib's reusable loky pool, by process id."""
    import multiprocessing

    from joblib import Parallel, delayed

    with multiprocessing.Manager() as manager:
        barrier = manager.Barrier(n_jobs)
        answers = Parallel(n_jobs=n_jobs)(
            delayed(_counts_at_barrier)(barrier) for _ in range(n_jobs)
        )
    return dict(answers)


@pytest.mark.slow
def test_grid_search_n_jobs_2_with_a_filled_store_encodes_each_sentence_once(tiny_model, tmp_path):
    from sklearn.model_selection import GridSearchCV

    pairs = pd.DataFrame({"a": sentences(40, 1), "b": sentences(40, 2)})
    unique = pd.concat([pairs["a"], pairs["b"]]).drop_duplicates()
    gold = np.random.default_rng(0).random(40)
    embedder = SentenceEmbedder(tiny_model, device="cpu", memory=tmp_path)
    before = work_counts()
    embedder.fit_transform(unique)  # the parent encodes each unique sentence, once
    search = GridSearchCV(
        embedder, {"similarity_fn_name": ["cosine", "manhattan"]}, cv=2, n_jobs=2
    ).fit(pairs, gold)
    assert _delta(before)["texts_encoded"] == len(unique)
    workers = loky_worker_counts(2)
    assert len(workers) == 2
    # The pool that ran the fits (each loaded the model to fit), and encoded nothing.
    assert all(c["models_loaded"] >= 1 for c in workers.values()), workers
    assert all(c["texts_encoded"] == 0 for c in workers.values()), workers
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_dask_is_imported_only_for_dask_inputs(tiny_model):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from skembed import SentenceEmbedder\n"
        "import skembed.parallel\n"
        f"SentenceEmbedder({str(tiny_model)!r}, device='cpu').fit_transform(['a', 'b'])\n"
        "heavy = [m for m in ('dask', 'distributed', 'ray') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300
    )
    assert result.returncode == 0, result.stderr
