from __future__ import annotations

import numpy as np
import pytest

from dqe.algorithms.neighbors import (
    NO_NEIGHBOR,
    Neighbors,
    check_embeddings,
    l2_normalized,
    reduce_best,
    top1_neighbors,
)


def brute_force_top1(queries: np.ndarray, corpus: np.ndarray, query_ids=None, corpus_ids=None) -> Neighbors:
    """The rule spelled out: highest float64 inner product, then lowest id, never the query's own id."""
    corpus_ids = np.arange(len(corpus)) if corpus_ids is None else np.asarray(corpus_ids)
    ids, sims = [], []
    for i, query in enumerate(queries.astype(np.float64)):
        scores = (corpus.astype(np.float32).astype(np.float64) * query.astype(np.float32)).sum(axis=1)
        allowed = np.ones(len(corpus), dtype=bool) if query_ids is None else corpus_ids != query_ids[i]
        if not allowed.any():
            ids.append(NO_NEIGHBOR)
            sims.append(-np.inf)
            continue
        best = scores[allowed].max()
        ids.append(int(corpus_ids[allowed & (scores == best)].min()))
        sims.append(best)
    return Neighbors(np.array(ids), np.array(sims))


@pytest.fixture
def vectors() -> np.ndarray:
    rng = np.random.default_rng(3)
    return l2_normalized(rng.normal(size=(300, 12)))


def test_flat_search_matches_brute_force_and_skips_self(vectors):
    ids = np.arange(len(vectors))
    found = top1_neighbors(vectors, vectors, query_ids=ids)
    expected = brute_force_top1(vectors, vectors, query_ids=ids)
    np.testing.assert_array_equal(found.ids, expected.ids)
    np.testing.assert_allclose(found.similarities, expected.similarities, rtol=0, atol=1e-12)
    assert not (found.ids == ids).any()


def test_without_query_ids_a_row_finds_itself(vectors):
    found = top1_neighbors(vectors[:20], vectors)
    np.testing.assert_array_equal(found.ids, np.arange(20))
    np.testing.assert_allclose(found.similarities, 1.0, atol=1e-6)


def test_ties_between_duplicates_go_to_the_lowest_id(vectors):
    corpus = vectors.copy()
    duplicates = [250, 7, 120, 33, 299, 64]  # six copies of one vector: more than the initial candidate count
    corpus[duplicates] = corpus[250]
    query = corpus[[250]]
    found = top1_neighbors(query, corpus)
    assert found.ids[0] == 7
    # Skipping the lowest copy itself leaves the next-lowest copy, not an arbitrary one.
    found = top1_neighbors(corpus[[7]], corpus, query_ids=[7])
    assert found.ids[0] == 33
    assert found.similarities[0] == brute_force_top1(corpus[[7]], corpus, query_ids=np.array([7])).similarities[0]


def test_many_duplicates_resolved_even_beyond_the_doubling_steps():
    rng = np.random.default_rng(0)
    corpus = l2_normalized(rng.normal(size=(100, 8)))
    corpus[10:90] = corpus[50]  # 80 tied copies
    queries = corpus[[50, 89, 10]]
    found = top1_neighbors(queries, corpus, query_ids=[50, 89, 10], candidates=1)
    np.testing.assert_array_equal(found.ids, [10, 10, 11])


def test_corpus_ids_are_returned_and_used_for_ties_and_self(vectors):
    corpus = vectors[:50].copy()
    corpus[1:21] = corpus[0]  # 21 copies
    global_ids = np.arange(1000, 1050)[::-1]  # descending: FAISS meets the highest ids of the copies first
    found = top1_neighbors(corpus[[0]], corpus, query_ids=[global_ids[0]], corpus_ids=global_ids, candidates=2)
    assert found.ids[0] == global_ids[20]
    found = top1_neighbors(corpus[[0]], corpus, query_ids=[global_ids[20]], corpus_ids=global_ids, candidates=2)
    assert found.ids[0] == global_ids[19]


def test_partitioned_search_then_reduce_equals_single_search(vectors):
    corpus = vectors.copy()
    corpus[[5, 180, 260]] = corpus[90]  # ties that straddle partitions
    queries = corpus[[90, 5, 17, 200]]
    query_ids = np.array([90, 5, 17, 200])
    whole = top1_neighbors(queries, corpus, query_ids=query_ids)
    order = np.random.default_rng(1).permutation(len(corpus))
    partials = [
        top1_neighbors(queries, corpus[part], query_ids=query_ids, corpus_ids=part)
        for part in np.array_split(order, 4)
    ]
    for arrangement in (partials, partials[::-1]):
        combined = reduce_best(arrangement)
        np.testing.assert_array_equal(combined.ids, whole.ids)
        np.testing.assert_array_equal(combined.similarities, whole.similarities)
    assert whole.ids[0] == 5 and whole.ids[1] == 90


def test_partition_holding_only_the_query_reports_no_neighbor(vectors):
    found = top1_neighbors(vectors[[4]], vectors[[4]], query_ids=[4], corpus_ids=[4])
    assert found.ids[0] == NO_NEIGHBOR and found.similarities[0] == -np.inf
    combined = reduce_best([found, top1_neighbors(vectors[[4]], vectors[[9]], query_ids=[4], corpus_ids=[9])])
    assert combined.ids[0] == 9


def test_reduce_best_breaks_equal_similarities_by_lowest_id():
    first = Neighbors(np.array([8, NO_NEIGHBOR, 2]), np.array([0.5, -np.inf, 0.9]))
    second = Neighbors(np.array([3, 6, 7]), np.array([0.5, 0.1, 0.95]))
    combined = reduce_best([first, second])
    np.testing.assert_array_equal(combined.ids, [3, 6, 7])
    np.testing.assert_array_equal(combined.similarities, [0.5, 0.1, 0.95])
    np.testing.assert_array_equal(first.ids, [8, NO_NEIGHBOR, 2])  # inputs untouched


def test_reduce_best_rejects_mismatched_partials():
    with pytest.raises(ValueError, match="at least one"):
        reduce_best([])
    with pytest.raises(ValueError, match="answers 2 queries"):
        reduce_best([Neighbors(np.zeros(3, int), np.zeros(3)), Neighbors(np.zeros(2, int), np.zeros(2))])


def test_ivf_is_close_to_exact_on_clustered_data():
    rng = np.random.default_rng(5)
    centers = rng.normal(size=(20, 16))
    points = l2_normalized(centers[rng.integers(0, 20, 4000)] + 0.05 * rng.normal(size=(4000, 16)))
    ids = np.arange(len(points))
    exact = top1_neighbors(points[:500], points, query_ids=ids[:500])
    approximate = top1_neighbors(points[:500], points, query_ids=ids[:500], index="ivf", nlist=20, nprobe=4)
    assert (approximate.ids == exact.ids).mean() > 0.95
    assert (approximate.ids != ids[:500]).all()
    # Approximate search can only miss the best neighbour, never beat it.
    assert (approximate.similarities <= exact.similarities + 1e-12).all()


def test_ivf_with_every_list_probed_is_exact(vectors):
    ids = np.arange(len(vectors))
    exact = top1_neighbors(vectors, vectors, query_ids=ids)
    probed_all = top1_neighbors(vectors, vectors, query_ids=ids, index="ivf", nlist=4, nprobe=4)
    np.testing.assert_array_equal(probed_all.ids, exact.ids)


@pytest.mark.parametrize(
    ("queries", "corpus", "kwargs", "message"),
    [
        (np.zeros(3), np.zeros((3, 3)), {}, "queries must be a 2-D array"),
        (np.zeros((2, 3)), np.zeros((3, 4)), {}, "3 dimensions but corpus has 4"),
        (np.full((2, 3), np.nan), np.zeros((3, 3)), {}, "NaN or infinite"),
        (np.zeros((2, 3)), np.array([["a", "b", "c"]]), {}, "real numbers"),
        (np.zeros((2, 3)), np.zeros((3, 3)), {"index": "hnsw"}, "'flat' or 'ivf'"),
        (np.zeros((2, 3)), np.zeros((3, 3)), {"corpus_ids": [1, 1, 2]}, "unique"),
        (np.zeros((2, 3)), np.zeros((3, 3)), {"corpus_ids": [0, -1, 2]}, "non-negative"),
        (np.zeros((2, 3)), np.zeros((3, 3)), {"query_ids": [0]}, "one id per queries row"),
        (np.zeros((2, 3)), np.zeros((3, 3)), {"nprobe": 0}, "nprobe must be a positive integer"),
    ],
)
def test_invalid_inputs_are_rejected_with_a_clear_message(queries, corpus, kwargs, message):
    with pytest.raises(ValueError, match=message):
        top1_neighbors(queries, corpus, **kwargs)


def test_l2_normalized_rejects_zero_rows_and_check_embeddings_returns_float32():
    with pytest.raises(ValueError, match="row 1 is all zeros"):
        l2_normalized([[1.0, 0.0], [0.0, 0.0]])
    checked = check_embeddings(np.ones((2, 2), dtype=np.float64))
    assert checked.dtype == np.float32 and checked.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(l2_normalized([[3.0, 4.0]]), axis=1), 1.0, rtol=1e-6)
