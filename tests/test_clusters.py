"""Feature families: the kNN graph, planted groups recovered, cohesion, the map, the cache,
`saetui clusters` and its bad input."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from saetui.cli import main
from saetui.engine.clusters import (
    cached_clusters,
    cluster_directions,
    cohesion_of,
    coactivation_pairs,
    compute_clusters,
    feature_family,
    knn_blockwise,
    label_clusters,
    pca_2d,
    unit_rows,
)
from saetui.engine.index import build_index
from saetui.engine.worker import drive
from saetui.ui.feature_map import BRAILLE_BASE, CURRENT_MARK, braille_char, render_map

from support import HIDDEN, open_session, write_sae

CONTEXT = "48"
BUDGET = str(48 * 24)


def planted(groups: int, per: int, d: int, noise: float, seed: int = 0):
    """Directions around `groups` random centres (shuffled) and each row's group."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((groups, d))
    truth = rng.permutation(np.repeat(np.arange(groups), per))
    rows = centres[truth] + noise * rng.standard_normal((groups * per, d))
    return rows.astype(np.float32), truth


def brute_knn(x: np.ndarray, k: int):
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = (u.astype(np.float64) @ u.T.astype(np.float64))
    np.fill_diagonal(s, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, axis=1)


# -- the kNN graph ---------------------------------------------------------------------------------


@pytest.mark.parametrize("block", [7, 64, 1000])
def test_blockwise_knn_equals_brute_force(block):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 24)).astype(np.float32)
    ids, sims = knn_blockwise(unit_rows(x), 6, block=block)
    want_ids, want_sims = brute_knn(x, 6)
    assert np.array_equal(ids, want_ids)
    assert np.allclose(sims, want_sims, atol=1e-5)


def test_knn_breaks_ties_by_smaller_id():
    x = np.array([[1, 0], [1, 0], [1, 0], [1, 0], [0, 1]], np.float32)  # rows 0-3 identical
    ids, _ = knn_blockwise(unit_rows(x), 2, block=2)
    assert ids[:4].tolist() == [[1, 2], [0, 2], [0, 1], [0, 1]]


# -- clustering ------------------------------------------------------------------------------------


def test_planted_groups_are_recovered():
    x, truth = planted(groups=12, per=20, d=48, noise=0.6)
    result = drive(cluster_directions(x, np.arange(len(x)), neighbours=8, seed=0))
    found = sorted(tuple(sorted(c.members)) for c in result.clusters)
    want = sorted(tuple(np.flatnonzero(truth == g).tolist()) for g in range(12))
    assert found == want
    # every live feature once; sizes; cohesion is the mean pairwise cosine of the members
    assert sorted(f for c in result.clusters for f in c.members) == list(range(len(x)))
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    for c in result.clusters:
        cos = u[c.members] @ u[c.members].T
        n = c.size
        assert c.cohesion == pytest.approx((cos.sum() - n) / (n * (n - 1)), abs=1e-5)
        # most central first: the first member has the highest mean cosine to the others
        central = (cos.sum(1) - 1) / (n - 1)
        assert central[0] == pytest.approx(central.max(), abs=1e-6)


def test_only_live_features_are_clustered_and_ids_are_kept():
    x, truth = planted(groups=6, per=15, d=32, noise=0.5, seed=3)
    x = np.concatenate([x, np.zeros((5, 32), np.float32)])  # 5 dead features at the end
    live = np.arange(0, 90, dtype=np.int64)
    result = drive(cluster_directions(x, live, neighbours=6, seed=0))
    assert sorted(f for c in result.clusters for f in c.members) == live.tolist()
    assert result.n_dead == 5 and result.cluster_of(92) is None
    assert result.live_cluster_ids().tolist() == [result.cluster_of(int(f)).id for f in live]  # the map's colours
    cluster, siblings = feature_family(result, 0, n_siblings=3)
    assert cluster is result.cluster_of(0) and len(siblings) == 3 and 0 not in siblings
    assert all(truth[s] == truth[0] for s in siblings)


def test_deterministic_with_a_seed():
    x, _ = planted(groups=10, per=12, d=16, noise=1.2, seed=5)  # overlapping groups: Louvain has choices
    runs = [drive(cluster_directions(x, np.arange(len(x)), neighbours=5, seed=7)) for _ in range(2)]
    assert [c.members for c in runs[0].clusters] == [c.members for c in runs[1].clusters]
    assert np.array_equal(runs[0].map_xy, runs[1].map_xy)


def test_coactivation_links_features_sharing_top_tokens():
    tops = {10: [(0, 1, 5), (0, 2, 6), (3, 4, 7)], 11: [(0, 1, 5), (3, 4, 7)], 12: [(9, 9, 1)]}
    assert coactivation_pairs(tops, {10: 0, 11: 1, 12: 2}) == {(0, 1): 2}
    # co-activation alone joins two features whose decoders are orthogonal
    x = np.eye(8, dtype=np.float32)
    result = drive(cluster_directions(x, np.arange(8), neighbours=2, coactivation={(0, 1): 20, (2, 3): 20}, top_k=20, min_similarity=0.5))
    assert result.cluster_of(0) is result.cluster_of(1)
    assert result.cluster_of(2) is result.cluster_of(3)
    assert result.cluster_of(0) is not result.cluster_of(2)


def test_cohesion_of_small_cases():
    assert cohesion_of(np.ones((1, 3))) is None
    u = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert cohesion_of(u) == pytest.approx(0.0)


def test_labels_prefer_names_then_tokens():
    x, _ = planted(groups=2, per=5, d=8, noise=0.1)
    result = drive(cluster_directions(x, np.arange(10), neighbours=3))
    for c in result.clusters:
        c.token_label = "tok"
    first = result.clusters[0]
    label_clusters(result, {first.members[0]: "cities", first.members[1]: "cities", first.members[2]: "towns"})
    assert first.label == f"cities · towns +{first.size - 3}"
    assert result.clusters[1].label == "tok"


# -- the map ---------------------------------------------------------------------------------------


def test_pca_matches_numpy_svd():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 10)) * np.array([5, 3, 1, 1, 1, 1, 1, 1, 1, 1])
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    got = pca_2d(mx.array(u.astype(np.float32)))
    c = u - u.mean(0)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    want = c @ vt[:2].T
    for j in range(2):
        assert abs(np.corrcoef(got[:, j], want[:, j])[0, 1]) > 0.999


def test_braille_map_draws_points_marks_and_the_current_feature():
    assert braille_char([]) == chr(BRAILLE_BASE)
    assert braille_char([(0, 0), (1, 3)]) == chr(BRAILLE_BASE + 0x01 + 0x80)
    xy = np.array([[0.0, 0.0], [1.0, 1.0]])
    text = render_map(xy, np.array([0, 1]), width=4, height=2)
    lines = text.plain.split("\n")
    assert len(lines) == 2 and all(len(line) == 4 for line in lines)
    # (0, 0): bottom-left dot of the bottom-left cell; (1, 1): top-right dot of the top-right cell
    assert lines[1][0] == braille_char([(0, 3)])
    assert lines[0][3] == braille_char([(1, 0)])
    marked = render_map(xy, np.array([0, 1]), width=4, height=2, selected=1, current=0)
    assert marked.plain.split("\n")[1][0] == CURRENT_MARK
    styles = {str(span.style) for span in marked.spans}
    assert any("bright_yellow" in s for s in styles)  # the selected cluster stands out


# -- on an SAE with an index: cache, JSON, bad input -------------------------------------------------


@pytest.fixture(scope="module")
def s(tiny_setup):
    opened = open_session(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"], context_len=int(CONTEXT), max_tokens=int(BUDGET))
    yield opened
    opened.close()


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code, err, *needles):
    assert code == 2
    # progress bars (lines starting with "[") and notes aside, one line says what is wrong
    lines = [line for line in err.strip().splitlines() if not line.startswith(("saetui: note:", "["))]
    assert len(lines) == 1 and lines[0].startswith("saetui: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_clusters_of_an_indexed_sae_are_cached_and_cover_the_live_features(s):
    index = s.job(build_index)
    first = s.job(compute_clusters, index, cofiring_tokens=48 * 8)
    live = index.live_features()
    assert not first.from_cache
    assert sorted(f for c in first.clusters for f in c.members) == sorted(live.tolist())
    assert s.session.clusters is first  # the session's, for the feature page and the clusters screen
    again = s.job(compute_clusters, index, cofiring_tokens=48 * 8, names={int(live[0]): "named"})
    assert again.from_cache and s.session.clusters is again
    assert [c.members for c in again.clusters] == [c.members for c in first.clusters]
    assert again.cluster_of(int(live[0])).label.startswith("named")
    other = s.job(compute_clusters, index, cofiring_tokens=48 * 8, seed=3)
    assert not other.from_cache  # the seed is part of the key
    # reading the cache only: never computes, and leaves the session's clustering as it is
    read = s(cached_clusters, index, cofiring_tokens=48 * 8)
    assert read is not None and [c.members for c in read.clusters] == [c.members for c in first.clusters]
    assert s(cached_clusters, index, cofiring_tokens=48 * 8, seed=99) is None
    assert s.session.clusters is other


def test_clusters_json_shape(capsys, tiny_setup, s):
    index = s.job(build_index)
    code, out, err = run(capsys, "clusters", tiny_setup["sae"], "--dataset", tiny_setup["dataset"], "--context-len", CONTEXT,
                         "--max-tokens", BUDGET, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"clusters"}
    members = []
    for c in data["clusters"]:
        assert {"id", "label", "members", "cohesion"} <= set(c)
        assert isinstance(c["label"], str) and c["label"]
        assert c["cohesion"] is None or -1 <= c["cohesion"] <= 1
        members += c["members"]
    assert sorted(members) == sorted(index.live_features().tolist())
    code, out, err = run(capsys, "clusters", tiny_setup["sae"], "--dataset", tiny_setup["dataset"], "--context-len", CONTEXT,
                         "--max-tokens", BUDGET)
    assert code == 0, err
    assert "clusters of" in out and "live features" in out


def test_more_neighbours_than_features_is_one_line(capsys, tiny_setup):
    code, _, err = run(capsys, "clusters", tiny_setup["sae"], "--dataset", tiny_setup["dataset"], "--context-len", CONTEXT,
                       "--max-tokens", BUDGET, "--neighbours", "256")
    one_line_error(code, err, "256 features", "--neighbours 255")


@pytest.mark.parametrize("live", [0, 1])
def test_all_dead_or_one_live_is_one_line(capsys, tiny_setup, tmp_path, live):
    rng = np.random.default_rng(0)
    bias = np.full(32, -1e4, np.float32)  # nothing fires...
    bias[:live] = 1e4  # ...except the first `live` features, always
    weights = {
        "encoder.weight": rng.normal(0, 0.3, (32, HIDDEN)).astype(np.float32),
        "encoder.bias": bias,
        "decoder.weight": rng.normal(0, 0.3, (HIDDEN, 32)).astype(np.float32),
        "decoder.bias": np.zeros(HIDDEN, np.float32),
    }
    meta = json.loads((__import__("pathlib").Path(tiny_setup["sae"]) / "config.json").read_text())["metadata"]
    sae = write_sae(tmp_path / "dead.mlx", d_hidden=32, k=4, weights=weights, metadata=meta)
    code, _, err = run(capsys, "clusters", str(sae), "--dataset", tiny_setup["dataset"], "--context-len", CONTEXT,
                       "--max-tokens", BUDGET, "--neighbours", "3")
    one_line_error(code, err, "dead" if live == 0 else "Only one")


def test_sketched_knn_finds_the_true_neighbours_of_planted_groups():
    # Big wide decoders take kNN candidates from a random sketch, ranked exactly: on families
    # (cosine ~0.5 within, ~0 between) every neighbour found is in the feature's family, its
    # similarity is the exact cosine, and most are the brute-force ones.
    x, truth = planted(groups=30, per=20, d=256, noise=1.0, seed=2)
    ids, sims = knn_blockwise(unit_rows(x), 5, block=128, sketch_dim=64)
    want_ids, _ = brute_knn(x, 5)
    assert (truth[ids] == truth[:, None]).all()
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert np.allclose(sims, np.einsum("nd,nkd->nk", u, u[ids]), atol=1e-5)
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(ids.tolist(), want_ids.tolist())])
    assert overlap > 0.9


def test_family_line_names_cluster_and_siblings_literally():
    from saetui.engine.clusters import Cluster
    from saetui.ui.feature_map import family_line

    cluster = Cluster(3, [5, 6, 7], 0.25, label="[bold]cities[/]")
    line = family_line(cluster, [6, 7], {6: "towns\x1b[2J"})
    assert line.plain == "cluster 3 · [bold]cities[/] · 3 members, cohesion 0.25 · siblings: 6 towns\\x1b[2J, 7"
    assert "dead" in family_line(None, []).plain
