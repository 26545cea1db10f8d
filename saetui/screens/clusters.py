"""The clusters screen: the SAE's families of features, and a map of them.

Left: the clusters (sorted by size or cohesion, filterable by label or feature id). Right:
the map (a 2-D projection of the decoder directions, clusters coloured, the selected one
bright) and the selected cluster's members with names, densities and a one-line example;
enter on a member opens its feature page. The clustering needs the session's complete
feature index (the feature screen's build is followed, or one started here), is cached
(saetui/engine/clusters.py) and becomes the session's (`session.clusters`), which the
feature page's family line reads.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Iterable

from rich.text import Text
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static

from ..engine.clusters import Clustering, compute_clusters, label_clusters
from ..engine.errors import Cancelled, UserError
from ..engine.features import show_context
from ..engine.index import DEFAULT_TOP_K, FeatureIndex, build_index, default_budget
from ..messages import OpenFeature, RegistryChange
from ..ui.safe_text import literal, visible
from ..widgets.feature_map import FeatureMap
from ..widgets.feature_table import NAME, FeatureTable
from .base import EngineScreen
from .edit_entry import SafeInput
from .feature import INDEX_JOB

if TYPE_CHECKING:
    from ..engine.session import Session

SORTS = ("size", "cohesion")
# Members listed per cluster (a huge cluster's tail is summarised in the caption).
MEMBERS_SHOWN = 200
# The label of the clustering on the engine's worker.
CLUSTERS_JOB = "clustering"


class KeyedTable(DataTable):
    @property
    def highlighted_key(self) -> int | None:
        if self.row_count == 0:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return int(key.value) if key.value is not None else None


def member_rows(session: "Session", index: FeatureIndex, members: list[int]) -> list[tuple[int, float, Text]]:
    """(feature, density, one-line example with its strongest token marked) per member (worker)."""
    rows = []
    for f in members:
        stats = index.feature(f)
        example = Text()
        if stats.top:
            shown = show_context(session, index, stats.top[0])
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
        self._cancelled = False

    def compose_body(self) -> Iterable[Widget]:
        with Horizontal(id="clusters-body"):
            with Vertical(id="clusters-left"):
                yield SafeInput(placeholder="/ filter by label or feature id", id="clusters-filter")
                yield Static("Clustering the features…", id="clusters-summary")
                yield KeyedTable(id="clusters-table", cursor_type="row", zebra_stripes=True)
            with Vertical(id="clusters-right"):
                yield FeatureMap(id="clusters-map")
                yield Static("", id="members-caption")
                yield FeatureTable((NAME, "density", "example"), id="members-table")

    def on_mount(self) -> None:
        table = self.query_one("#clusters-table", KeyedTable)
        for key, label in (("id", "#"), ("size", "size"), ("cohesion", "cohesion"), ("label", "label")):
            table.add_column(label, key=key)
        table.focus()
        self.app.registry_changed_signal.subscribe(self, self._registry_changed)
        self.run_worker(self._load, group="clusters", exclusive=True)  # type: ignore[arg-type]  # Textual's WorkType infers Never for async callables

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        if self.clustering is None and self._cancelled:
            # Cancelled (x) earlier: coming back starts again (the index build resumes).
            self.error, self._cancelled = None, False
            self.query_one("#clusters-summary", Static).update(Text("Clustering the features…"))
            self.run_worker(self._load, group="clusters", exclusive=True)  # type: ignore[arg-type]  # Textual's WorkType infers Never for async callables

    # -- computing ---------------------------------------------------------------------------

    def names(self) -> dict[int, str]:
        registry = getattr(self.app, "registry", None)
        if registry is None:
            return {}
        return {fid: name for fid in registry.feature_ids() if (name := registry.name(fid))}

    async def _index(self) -> FeatureIndex:
        """The session's complete index: a build under way (the feature screen's) is followed,
        else one is started (it reads the cache when it can)."""
        session = self.app.session
        index = session.index
        if index is not None and index.complete:
            return index
        self.query_one("#clusters-summary", Static).update(Text("Waiting for the feature index being built…", style="dim"))
        notes: list[str] = []
        job = self.engine.find_job(INDEX_JOB) or self.engine.start(INDEX_JOB, build_index, session, default_budget(session), DEFAULT_TOP_K, None, notes)
        try:
            return await self.app.wait_job(job)
        finally:
            for note in notes:
                self.notify(visible(note), markup=False, timeout=8)

    async def _load(self) -> None:
        if not await self.wait_ready():
            return
        session = self.app.session
        try:
            if session.clusters is not None:
                # Already clustered in this session: only the names may have changed.
                self.clustering = label_clusters(session.clusters, self.names())
            else:
                index = await self._index()
                self.query_one("#clusters-summary", Static).update(Text("Clustering the features…"))
                job = self.engine.find_job(CLUSTERS_JOB) or self.engine.start(CLUSTERS_JOB, compute_clusters, session, index, names=self.names())
                self.clustering = await self.app.wait_job(job)
        except Cancelled:
            self.error = "Clustering cancelled: switch screens and back to start again"
            self._cancelled = True
        except UserError as exc:
            self.error = exc.one_line()
        if self.error:
            self.query_one("#clusters-summary", Static).update(literal(self.error, style="red"))
            return
        self._show_map()
        self.refresh_clusters()

    # -- showing -----------------------------------------------------------------------------

    def _show_map(self) -> None:
        c = self.clustering
        assert c is not None
        self.query_one(FeatureMap).set_points(c.map_xy, c.live_cluster_ids(), c.live)

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
        members_table = self.query_one("#members-table", FeatureTable)
        if cid is None or self.clustering is None:
            members_table.clear()
            self._members_for = None
            fmap.highlight(None, fmap.current)
            return
        if cid == self._members_for:
            return
        self._members_for = cid
        fmap.highlight(cid, fmap.current)
        self.run_worker(partial(self._fill_members, cid), group="members", exclusive=True)  # type: ignore[arg-type]  # Textual's WorkType infers Never for async callables

    async def _fill_members(self, cid: int) -> None:
        c = self.clustering
        session = self.app.session
        index = session.index
        if c is None or index is None:
            return
        cluster = c.cluster(cid)
        shown = cluster.members[:MEMBERS_SHOWN]
        rows = await self.engine.run(member_rows, session, index, shown)
        if self._members_for != cid:
            return
        table = self.query_one("#members-table", FeatureTable)
        table.show_features(((f, (Text(f"{100 * density:.3g}%"), example)) for f, density, example in rows))
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
            f = self.query_one("#members-table", FeatureTable).highlighted_feature
            fmap = self.query_one(FeatureMap)
            fmap.highlight(fmap.selected, f)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        # Enter on a member opens it (FeatureTable posts OpenFeature); on a cluster, its members.
        if event.data_table.id == "clusters-table":
            event.stop()
            self.query_one("#members-table", FeatureTable).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "clusters-filter":
            self.refresh_clusters()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "clusters-filter":
            self.query_one("#clusters-table", KeyedTable).focus()

    def _registry_changed(self, change: RegistryChange) -> None:
        # Cluster labels come from the members' registry names (the members table renames itself).
        if self.clustering is not None:
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
        members = self.query_one("#members-table", FeatureTable)
        (clusters if members.has_focus else members).focus()

    def action_open_feature(self) -> None:
        members = self.query_one("#members-table", FeatureTable)
        f = members.highlighted_feature
        if f is None:
            c = self.clustering
            cid = self.query_one("#clusters-table", KeyedTable).highlighted_key
            if c is None or cid is None:
                self.notify("No cluster selected")
                return
            f = c.cluster(cid).members[0]
        self.post_message(OpenFeature(f))
