"""The clusters screen: the SAE's families of features, and a map of them.

Left: the clusters (sorted by size or cohesion, filterable by label or feature id). Right:
the map (a 2-D projection of the decoder directions, clusters coloured, the selected one
bright) and the selected cluster's members with names, densities and a one-line example;
enter on a member opens its feature page. The clustering needs the feature index (built
here when no screen has built it yet) and is cached (saetui/engine/clusters.py).
"""

from __future__ import annotations

import asyncio
from typing import Any, Iterable

import numpy as np
from rich.text import Text
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static

from ..engine.clusters import Clustering, clusters_for
from ..engine.errors import Cancelled, UserError
from ..engine.features import show_context
from ..engine.index import DEFAULT_TOP_K, build_index, default_budget, open_index
from ..engine.worker import Job
from ..messages import OpenFeature, RegistryChanged
from ..ui.safe_text import literal, visible
from ..widgets.feature_map import FeatureMap
from .base import EngineScreen
from .edit_entry import SafeInput

SORTS = ("size", "cohesion")
# Members listed per cluster (a huge cluster's tail is summarised in the caption).
MEMBERS_SHOWN = 200


class KeyedTable(DataTable):
    @property
    def highlighted_key(self) -> int | None:
        if self.row_count == 0:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return int(key.value) if key.value is not None else None


def member_rows(engine: Any, index: Any, members: list[int]) -> list[tuple[int, float, Text]]:
    """(feature, density, one-line example with its strongest token marked) per member (worker)."""
    rows = []
    for f in members:
        stats = index.feature(f)
        example = Text()
        if stats.top:
            shown = show_context(engine, index, stats.top[0])
            i = shown.example.max_index
            example.append(visible("".join(shown.tokens[max(0, i - 8):i]))[-30:])
            example.append(visible(shown.tokens[i]), "bold reverse")
            example.append(visible("".join(shown.tokens[i + 1:i + 8]))[:30])
        rows.append((f, stats.density, example))
    return rows


class ClustersScreen(EngineScreen):
    CSS_PATH = "clusters.tcss"
    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("s", "toggle_sort", "Sort"),
        Binding("f", "open_feature", "Open feature"),
        Binding("escape", "leave_filter", "Leave filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.clustering: Clustering | None = None
        self.sort = SORTS[0]
        self.error: str | None = None
        self._members_for: int | None = None

    def compose_body(self) -> Iterable[Widget]:
        with Horizontal(id="clusters-body"):
            with Vertical(id="clusters-left"):
                yield SafeInput(placeholder="/ filter by label or feature id", id="clusters-filter")
                yield Static("Clustering the features…", id="clusters-summary")
                yield KeyedTable(id="clusters-table", cursor_type="row", zebra_stripes=True)
            with Vertical(id="clusters-right"):
                yield FeatureMap(id="clusters-map")
                yield Static("", id="members-caption")
                yield KeyedTable(id="members-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one("#clusters-table", KeyedTable)
        for key, label in (("id", "#"), ("size", "size"), ("cohesion", "cohesion"), ("label", "label")):
            table.add_column(label, key=key)
        members = self.query_one("#members-table", KeyedTable)
        for key, label in (("feature", "feature"), ("name", "name"), ("density", "density"), ("example", "example")):
            members.add_column(label, key=key)
        table.focus()
        self.run_worker(self._load(), group="clusters", exclusive=True)

    # -- computing ---------------------------------------------------------------------------

    def names(self) -> dict[int, str]:
        registry = getattr(self.app, "registry", None)
        if registry is None:
            return {}
        return {fid: name for fid in registry.feature_ids() if (name := registry.name(fid))}

    async def _index(self, job: Job) -> Any:
        engine = self.engine
        index = open_index(engine)
        while index is not None and not index.complete and job is not None and not job.cancelled:
            # Another screen is building it in slices: wait for that build rather than race it.
            self.query_one("#clusters-summary", Static).update(Text("Waiting for the feature index being built…", style="dim"))
            await asyncio.sleep(0.5)
            index = open_index(engine)
            if index is not None and index.complete:
                return index
            if not self.app.is_running:
                return None
        if index is not None and index.complete:
            return index
        return await engine.run(build_index, engine, default_budget(engine), DEFAULT_TOP_K, job)

    async def _load(self) -> None:
        if not await self.wait_ready():
            return
        job = Job("clustering", self.app.progress_callback("clustering"))
        self.app.track_job(job)
        try:
            index = await self._index(job)
            if index is None:
                return
            self.clustering = await self.engine.run(clusters_for, self.engine, index, job, names=self.names())
        except Cancelled:
            self.error = "Clustering cancelled: switch screens and back to start again"
        except UserError as exc:
            self.error = exc.one_line()
        finally:
            self.app.clear_progress()
        if self.error:
            self.query_one("#clusters-summary", Static).update(literal(self.error, style="red"))
            return
        self._show_map()
        self.refresh_clusters()

    # -- showing -----------------------------------------------------------------------------

    def _show_map(self) -> None:
        c = self.clustering
        assert c is not None
        point_clusters = np.array([c.cluster_of(int(f)).id for f in c.live], dtype=np.int64)
        self.query_one(FeatureMap).set_points(c.map_xy, point_clusters, c.live)

    def matching_clusters(self) -> list:
        c = self.clustering
        if c is None:
            return []
        query = self.query_one("#clusters-filter", Input).value.strip().casefold()
        rows = list(c.clusters)
        if query:
            if query.lstrip("#").isdigit():
                f = int(query.lstrip("#"))
                rows = [x for x in rows if f in x.members or x.id == f]
            else:
                rows = [x for x in rows if query in x.label.casefold() or query in visible(x.label).casefold()]
        if self.sort == "cohesion":
            rows.sort(key=lambda x: (x.cohesion is None, -(x.cohesion or 0.0), x.id))
        return rows

    def refresh_clusters(self) -> None:
        table = self.query_one("#clusters-table", KeyedTable)
        keep = table.highlighted_key
        table.clear()
        rows = self.matching_clusters()
        for x in rows:
            table.add_row(Text(str(x.id)), Text(str(x.size)),
                          Text("—" if x.cohesion is None else f"{x.cohesion:.3f}", style="dim" if x.cohesion is None else ""),
                          literal(x.label), key=str(x.id))
        if keep is not None and any(x.id == keep for x in rows):
            table.move_cursor(row=table.get_row_index(str(keep)))
        c = self.clustering
        if c is not None:
            summary = Text(f"{len(rows):,} of {len(c.clusters):,} clusters · {len(c.live):,} live features, "
                           f"{c.n_dead:,} dead left out · sorted by {self.sort} (s)")
            self.query_one("#clusters-summary", Static).update(summary)
        self._show_members()

    def _show_members(self) -> None:
        cid = self.query_one("#clusters-table", KeyedTable).highlighted_key
        fmap = self.query_one(FeatureMap)
        members_table = self.query_one("#members-table", KeyedTable)
        if cid is None or self.clustering is None:
            members_table.clear()
            self._members_for = None
            fmap.highlight(None, fmap.current)
            return
        if cid == self._members_for:
            return
        self._members_for = cid
        fmap.highlight(cid, fmap.current)
        self.run_worker(self._fill_members(cid), group="members", exclusive=True)

    async def _fill_members(self, cid: int) -> None:
        c = self.clustering
        index = open_index(self.engine)
        if c is None or index is None:
            return
        cluster = c.cluster(cid)
        shown = cluster.members[:MEMBERS_SHOWN]
        rows = await self.engine.run(member_rows, self.engine, index, shown)
        if self._members_for != cid:
            return
        table = self.query_one("#members-table", KeyedTable)
        table.clear()
        names = self.names()
        for f, density, example in rows:
            table.add_row(Text(str(f)), literal(names.get(f, "")), Text(f"{100 * density:.3g}%"), example, key=str(f))
        caption = Text()
        caption.append(f"cluster {cluster.id}: ", style="bold")
        caption.append_text(literal(cluster.label))
        caption.append(f" · {cluster.size} members")
        if cluster.cohesion is not None:
            caption.append(f" · cohesion {cluster.cohesion:.3f}")
        if cluster.coactivation is not None:
            caption.append(f" · {cluster.coactivation:.0%} share top tokens")
        if cluster.size > len(shown):
            caption.append(f" · first {len(shown)} shown", style="dim")
        self.query_one("#members-caption", Static).update(caption)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "clusters-table":
            self._show_members()
        elif event.data_table.id == "members-table":
            f = self.query_one("#members-table", KeyedTable).highlighted_key
            fmap = self.query_one(FeatureMap)
            fmap.highlight(fmap.selected, f)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.data_table.id == "clusters-table":
            self.query_one("#members-table", KeyedTable).focus()
        else:
            self.action_open_feature()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "clusters-filter":
            self.refresh_clusters()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "clusters-filter":
            self.query_one("#clusters-table", KeyedTable).focus()

    def on_registry_changed(self, message: RegistryChanged) -> None:
        if self.clustering is not None:
            from ..engine.clusters import label_clusters

            label_clusters(self.clustering, self.names())
            self._members_for = None
            self.refresh_clusters()

    # -- keys ------------------------------------------------------------------------------------

    def show_feature(self, feature_id: int) -> None:
        """Select the cluster of a feature and mark it on the map (for other screens)."""
        c = self.clustering
        cluster = c.cluster_of(feature_id) if c is not None else None
        if cluster is None:
            return
        self.query_one("#clusters-filter", Input).value = ""
        self.refresh_clusters()
        table = self.query_one("#clusters-table", KeyedTable)
        table.move_cursor(row=table.get_row_index(str(cluster.id)))
        fmap = self.query_one(FeatureMap)
        fmap.highlight(cluster.id, int(feature_id))

    def action_filter(self) -> None:
        self.query_one("#clusters-filter", Input).focus()

    def action_leave_filter(self) -> None:
        self.query_one("#clusters-table", KeyedTable).focus()

    def action_toggle_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        self.refresh_clusters()

    def action_switch_table(self) -> None:
        clusters = self.query_one("#clusters-table", KeyedTable)
        members = self.query_one("#members-table", KeyedTable)
        (clusters if members.has_focus else members).focus()

    def action_open_feature(self) -> None:
        members = self.query_one("#members-table", KeyedTable)
        f = members.highlighted_key
        if f is None:
            c = self.clustering
            cid = self.query_one("#clusters-table", KeyedTable).highlighted_key
            if c is None or cid is None:
                self.notify("No cluster selected")
                return
            f = c.cluster(cid).members[0]
        self.post_message(OpenFeature(f))
