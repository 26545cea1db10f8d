"""The clusters screen through App.run_test: clusters listed, sorted and filtered, members
shown, the map drawn, enter opens a member's feature page."""

from __future__ import annotations

import json

from textual.widgets import DataTable, Input, Static

from support import wait_until

from saetui.app import SaetuiApp
from saetui.engine.engine import Engine, EngineSettings
from saetui.screens.clusters import ClustersScreen
from saetui.screens.feature import FeatureScreen
from saetui.widgets.feature_map import FeatureMap


def _rows(table: DataTable) -> list[list[str]]:
    return [[cell.plain for cell in table.get_row_at(r)] for r in range(table.row_count)]


async def test_clusters_screen(tiny_setup, tmp_path):
    registry = tmp_path / "reg.json"
    engine = Engine(EngineSettings(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"], context_len=48, max_tokens=48 * 24,
                                   registry=str(registry)))
    app = SaetuiApp(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        assert await app.wait_ready()
        await pilot.press("6")
        await wait_until(pilot, lambda: isinstance(app.screen, ClustersScreen), "clusters screen")
        screen = app.screen
        await wait_until(pilot, lambda: screen.clustering is not None or screen.error, "clustering", tries=3000)
        assert screen.error is None
        clustering = screen.clustering
        table = screen.query_one("#clusters-table", DataTable)
        rows = _rows(table)
        assert len(rows) == len(clustering.clusters)
        # sorted by size, then by cohesion (s)
        sizes = [int(r[1]) for r in rows]
        assert sizes == sorted(sizes, reverse=True)
        await pilot.press("s")
        coh = [float(r[2]) for r in _rows(table) if r[2] != "—"]
        assert coh == sorted(coh, reverse=True)
        # the map is drawn in Braille
        fmap = screen.query_one(FeatureMap)
        await wait_until(pilot, lambda: any(0x2800 <= ord(ch) <= 0x28FF for ch in str(fmap.render())), "map")
        # the highlighted cluster's members, with densities
        cid = table.highlighted_key
        members = screen.query_one("#members-table", DataTable)
        await wait_until(pilot, lambda: members.row_count > 0 and screen._members_for == cid, "members")
        want = clustering.cluster(cid).members[: members.row_count]
        assert [int(r[0]) for r in _rows(members)] == want
        assert all(r[2].endswith("%") for r in _rows(members))
        # filter by a feature id: only its cluster stays
        f = want[-1]
        screen.query_one("#clusters-filter", Input).value = str(f)
        await pilot.pause()
        assert [int(r[0]) for r in _rows(table)] == [clustering.cluster_of(f).id]
        screen.query_one("#clusters-filter", Input).value = ""
        await pilot.pause()
        # enter on a member opens its feature page
        members.focus()
        await pilot.pause()
        target = int(_rows(members)[0][0])
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, FeatureScreen), "feature screen")
        await wait_until(pilot, lambda: getattr(app.screen, "feature_id", None) == target, "feature shown")
        # the clustering is the session's: the feature page names the feature's cluster and siblings
        assert app.session.clusters is clustering
        family = app.screen.query_one("#feature-family", Static)
        cluster = clustering.cluster_of(target)
        await wait_until(pilot, lambda: f"cluster {cluster.id} · " in str(family.render()), "family line")
        siblings = [f for f in cluster.members if f != target][:8]
        if siblings:
            assert "siblings: " + str(siblings[0]) in str(family.render())


async def test_clusters_screen_shows_a_bad_input_line(tiny_setup, tmp_path):
    from support import HIDDEN, write_sae
    import numpy as np
    from pathlib import Path

    meta = json.loads((Path(tiny_setup["sae"]) / "config.json").read_text())["metadata"]
    rng = np.random.default_rng(0)
    weights = {
        "encoder.weight": rng.normal(0, 0.3, (16, HIDDEN)).astype(np.float32),
        "encoder.bias": np.full(16, -1e4, np.float32),  # never fires
        "decoder.weight": rng.normal(0, 0.3, (HIDDEN, 16)).astype(np.float32),
        "decoder.bias": np.zeros(HIDDEN, np.float32),
    }
    sae = write_sae(tmp_path / "dead.mlx", d_hidden=16, k=4, weights=weights, metadata=meta)
    engine = Engine(EngineSettings(sae=str(sae), dataset=tiny_setup["dataset"], context_len=48, max_tokens=48 * 8))
    app = SaetuiApp(engine)
    async with app.run_test(size=(100, 30)) as pilot:
        assert await app.wait_ready()
        await pilot.press("6")
        await wait_until(pilot, lambda: isinstance(app.screen, ClustersScreen), "clusters screen")
        screen = app.screen
        await wait_until(pilot, lambda: screen.error is not None, "error", tries=3000)
        assert "dead" in screen.error
        assert "dead" in str(screen.query_one("#clusters-summary", Static).render())
        assert app.is_running
