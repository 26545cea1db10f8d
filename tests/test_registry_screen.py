"""The registry screen through App.run_test: edits land in the file, hostile names stay literal."""

from __future__ import annotations

import json
from textual.widgets import DataTable, Input, Select, Static, TextArea

from support import burst, notifications_shown, wait_until

from saetui.app import SaetuiApp
from saetui.engine.engine import Engine, EngineSettings
from saetui.screens.edit_entry import EXAMPLE_CHARS, ConfirmDeleteScreen, EditEntryScreen
from saetui.screens.registry import ExportScreen, RegistryScreen

HOSTILE = "[bold red]loud[/] [@click=app.quit]quit[/] \x1b[2J\x1b[31mred"

START = {
    "3": {"name": "cities", "description": "Fires on city names like Paris", "examples": ["Paris, France"], "confidence": "high", "source": "other-tool"},
    "17": {"name": HOSTILE, "description": "[link=http://x]click[/link] \x07bell", "examples": [], "confidence": "low"},
    "42": {"name": "numbers", "description": "digits and arithmetic", "examples": ["2 + 2 = 4"], "confidence": "medium"},
    "comment": "kept by saetui",
}


def _app(tiny_setup, registry_path) -> SaetuiApp:
    engine = Engine(EngineSettings(sae=tiny_setup["sae"], dataset=tiny_setup["dataset"], registry=str(registry_path)))
    return SaetuiApp(engine)


async def _open_registry(app, pilot) -> RegistryScreen:
    assert await app.wait_ready()
    await pilot.press("4")
    await wait_until(pilot, lambda: isinstance(app.screen, RegistryScreen), "registry screen")
    await pilot.pause()
    return app.screen


def _rows(screen) -> list[list[str]]:
    table = screen.query_one("#registry-table", DataTable)
    return [[cell.plain for cell in table.get_row_at(r)] for r in range(table.row_count)]


def _file(path) -> dict:
    return json.loads(path.read_text())


async def test_table_filter_and_literal_names(tiny_setup, tmp_path):
    path = tmp_path / "reg.json"
    path.write_text(json.dumps(START))
    app = _app(tiny_setup, path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_registry(app, pilot)
        rows = _rows(screen)
        assert [r[0] for r in rows] == ["3", "17", "42"]
        assert rows[1][1] == HOSTILE.replace("\x1b", "\\x1b")  # markup and escapes as text
        assert [r[2] for r in rows] == ["high", "low", "medium"]
        assert [r[3] for r in rows] == ["—", "—", "—"]  # no feature index: density unknown
        await pilot.press("down")
        detail = str(screen.query_one("#registry-detail", Static).render())
        assert "[link=http://x]click[/link] \\x07bell" in detail
        assert app.is_running
        # The name is literal on the probe and feature screens' helper too.
        assert app.feature_name(17) == HOSTILE
        # Filter by text in names and descriptions.
        await pilot.press("slash", *"paris")
        assert [r[0] for r in _rows(screen)] == ["3"]
        await pilot.press("escape")
        assert app.focused.id == "registry-table"
        screen.query_one("#registry-filter", Input).value = "ARITH"
        await pilot.pause()
        assert [r[0] for r in _rows(screen)] == ["42"]
        screen.query_one("#registry-filter", Input).value = ""
        await pilot.pause()
        assert len(_rows(screen)) == 3
        # Keys 1-4 still switch screens from the table.
        await pilot.press("3")
        await wait_until(pilot, lambda: app.current_mode == "probe")


async def test_add_edit_delete_export_land_in_the_file(tiny_setup, tmp_path):
    path = tmp_path / "reg.json"
    path.write_text(json.dumps(START))
    app = _app(tiny_setup, path)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        screen = await _open_registry(app, pilot)
        # Add: the dialog asks for the id; ids outside the SAE are refused.
        await pilot.press("a")
        await wait_until(pilot, lambda: isinstance(app.screen, EditEntryScreen), "add dialog")
        dialog = app.screen
        await pilot.press(*"999", "ctrl+s")
        assert isinstance(app.screen, EditEntryScreen)  # 999 >= d_sae (256): refused, dialog stays
        dialog.query_one("#edit-id", Input).value = "3"
        dialog.query_one("#edit-name", Input).value = "overwrite?"
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, EditEntryScreen)  # 3 is already named: refused
        await wait_until(pilot, lambda: any("already in the registry as cities" in m for m in notifications_shown(app, "error")), "the refusal")
        dialog.query_one("#edit-id", Input).value = "5"
        dialog.query_one("#edit-name", Input).value = "fox_and_bird"
        dialog.query_one("#edit-description", TextArea).load_text("Animals and colours")
        dialog.query_one("#edit-confidence", Select).value = "medium"
        dialog.query_one("#edit-examples", TextArea).load_text("The red fox\n\nthe blue bird\n")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, RegistryScreen), "back on the registry")
        on_disk = _file(path)
        assert on_disk["5"] == {"name": "fox_and_bird", "description": "Animals and colours", "examples": ["The red fox", "the blue bird"], "confidence": "medium"}
        await wait_until(pilot, lambda: [r[0] for r in _rows(screen)] == ["3", "5", "17", "42"], "the new row")
        assert screen.query_one("#registry-table", DataTable).cursor_row == 1  # on the new entry
        assert any("Saved feature 5: fox_and_bird" in m for m in notifications_shown(app))

        # Edit (enter on a row): change only the confidence; other fields, unknown ones too, stay.
        screen.query_one("#registry-table", DataTable).move_cursor(row=0)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, EditEntryScreen), "edit dialog")
        assert app.screen.query_one("#edit-name", Input).value == "cities"
        app.screen.query_one("#edit-confidence", Select).value = "low"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, RegistryScreen))
        assert _file(path)["3"] == {**START["3"], "confidence": "low"}
        # Escape cancels an edit: nothing changes.
        before = path.read_bytes()
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, EditEntryScreen))
        app.screen.query_one("#edit-name", Input).value = "not saved"
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, RegistryScreen))
        assert path.read_bytes() == before

        # Delete asks first: n keeps, y deletes; the previous file is the backup.
        screen.query_one("#registry-table", DataTable).move_cursor(row=3)
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDeleteScreen))
        await pilot.press("n")
        await wait_until(pilot, lambda: isinstance(app.screen, RegistryScreen))
        assert "42" in _file(path)
        before = path.read_bytes()
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDeleteScreen))
        await pilot.press("y")
        await wait_until(pilot, lambda: "42" not in _file(path), "entry 42 deleted")
        assert (tmp_path / "reg.json.bak").read_bytes() == before
        assert _file(path)["comment"] == "kept by saetui"
        await wait_until(pilot, lambda: [r[0] for r in _rows(screen)] == ["3", "5", "17"], "the row deleted")

        # Export to a chosen path.
        target = tmp_path / "exported" / "copy.json"
        await pilot.press("w")
        await wait_until(pilot, lambda: isinstance(app.screen, ExportScreen))
        app.screen.query_one("#export-path", Input).value = str(target)
        await pilot.press("enter")
        await wait_until(pilot, lambda: target.exists(), "exported file")
        assert _file(target) == _file(path)


async def test_hostile_name_survives_an_edit_of_another_field(tiny_setup, tmp_path):
    path = tmp_path / "reg.json"
    path.write_text(json.dumps(START))
    app = _app(tiny_setup, path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_registry(app, pilot)
        screen.query_one("#registry-table", DataTable).move_cursor(row=1)
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(app.screen, EditEntryScreen))
        name = app.screen.query_one("#edit-name", Input).value
        assert "\x1b" not in name and name == HOSTILE.replace("\x1b", "\\x1b")
        app.screen.query_one("#edit-confidence", Select).value = "high"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, RegistryScreen))
        saved = _file(path)["17"]
        assert saved["name"] == HOSTILE and saved["description"] == START["17"]["description"]
        assert saved["confidence"] == "high"
        assert app.is_running


async def test_corrupt_registry_opens_read_only(tiny_setup, tmp_path):
    path = tmp_path / "reg.json"
    path.write_bytes(b'{"3": {"name": "cities"')  # cut off mid-write by some other program
    app = _app(tiny_setup, path)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        screen = await _open_registry(app, pilot)
        warned = lambda: any("cannot be read" in m and "read-only" in m for m in notifications_shown(app, "warning"))  # noqa: E731
        await wait_until(pilot, warned, "the read-only warning")
        assert "READ-ONLY" in str(screen.query_one("#registry-summary", Static).render())
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, RegistryScreen)  # no dialog on a read-only registry
    assert path.read_bytes() == b'{"3": {"name": "cities"'


async def test_feature_index_fills_density_and_examples(tiny_setup, tmp_path):
    """When the feature index is open, the table shows densities and the dialog pre-fills examples."""
    from saetui.engine.index import build_index

    path = tmp_path / "reg.json"
    app = _app(tiny_setup, path)
    async with app.run_test(size=(80, 24)) as pilot:
        assert await app.wait_ready()
        index = await app.wait_job(app.engine.start("indexing", build_index, app.engine.session, 2048))
        stats = [index.feature(int(f)) for f in index.live_features()]
        busiest = max(stats, key=lambda s: (s.count, -s.feature_id))
        fid = busiest.feature_id
        app.registry.set(fid, {"name": "busy"})
        app.registry.save()
        screen = await _open_registry(app, pilot)
        expected_density = busiest.count / busiest.tokens
        assert _rows(screen)[0][3] == f"{100 * expected_density:.3g}%"
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, EditEntryScreen))
        tokenizer = app.engine.session.tokenizer
        examples = app.screen.query_one("#edit-examples", TextArea).text.split("\n")
        # Clean excerpts, one per top context: the peak token's document only (no special
        # tokens), whole words, at most EXAMPLE_CHARS plus the peak token.
        special = {tokenizer.convert_tokens_to_ids(t) for t in ("<s>", "</s>", "<pad>")}
        assert 1 <= len(examples) <= 5
        contexts = [([int(t) for t in e.window_tokens.tolist()], e.max_index) for e in busiest.top[:5]]
        for example in examples:
            assert not any(t in example for t in ("<s>", "</s>", "<pad>"))
            assert any(_clean_excerpt_of(tokenizer, ids, peak, special, example) for ids, peak in contexts), example
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, RegistryScreen))
        assert _file(path)[str(fid)]["examples"] == examples


async def test_odd_registries_open_without_crashing(tiny_setup, tmp_path):
    """A 5,000-digit key is kept as another tool's data; a registry nested 100,000 levels
    deep or a mode-444 file opens read-only with a warning (issue 16, items 11 and 14)."""
    import os

    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps({"9" * 5000: {"name": "odd"}, "3": {"name": "cities"}}))
    deep = tmp_path / "deep.json"
    deep.write_text('{"1": ' + "[" * 100_000 + "]" * 100_000 + "}")
    locked = tmp_path / "locked.json"
    locked.write_text(json.dumps({"42": {"name": "numbers"}}))
    os.chmod(locked, 0o444)
    for path, ids, read_only in ((huge, ["3"], False), (deep, [], True), (locked, ["42"], True)):
        app = _app(tiny_setup, path)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await _open_registry(app, pilot)
            assert [r[0] for r in _rows(screen)] == ids
            assert app.registry.read_only is read_only
            if read_only:
                await pilot.press("a")  # adding is refused with a notice, never written
                await pilot.pause()
                assert app.screen is screen
        assert app.return_code in (None, 0), path
    assert json.loads(locked.read_text()) == {"42": {"name": "numbers"}}




def _clean_excerpt_of(tokenizer, ids, peak, special, example) -> bool:
    """Whether `example` is a clean excerpt of this window around its peak token."""
    if ids[peak] in special:  # a feature firing on a special token: the text after it
        peak += 1
        if peak >= len(ids) or ids[peak] in special:
            return False
    lo = max([i + 1 for i in range(peak) if ids[i] in special], default=0)
    hi = min([i for i in range(peak + 1, len(ids)) if ids[i] in special], default=len(ids))
    document = " ".join(tokenizer.decode(ids[lo:hi]).split())
    peak_text = tokenizer.decode(ids[peak : peak + 1]).strip()
    if example not in document or peak_text not in example or len(example) > EXAMPLE_CHARS + len(peak_text):
        return False
    # Whole words: it starts and ends where the document's words do (or at its ends).
    start = document.index(example)
    end = start + len(example)
    return (start == 0 or document[start - 1] == " ") and (end == len(document) or document[end] == " ")


async def test_keys_typed_in_a_burst_after_tab_reach_the_next_field(tiny_setup, tmp_path):
    """Tab moves focus at once: keys typed right after it (one burst, as a fast typist's or a
    paste-like terminal's) land in the field tab moved to, not in the one it left."""
    path = tmp_path / "reg.json"
    app = _app(tiny_setup, path)
    async with app.run_test(size=(80, 24)) as pilot:
        await _open_registry(app, pilot)
        await pilot.press("a")
        await wait_until(pilot, lambda: isinstance(app.screen, EditEntryScreen), "add dialog")
        dialog = app.screen
        name, fid = dialog.query_one("#edit-name", Input), dialog.query_one("#edit-id", Input)
        # As pilot.press types it (one key at a time), and as a terminal delivers it (a burst).
        await pilot.press(*"12", "tab", *"fox")
        assert (fid.value, name.value) == ("12", "fox")
        burst(app, ["shift+tab", *"34", "tab", *"_bird"])
        await wait_until(pilot, lambda: len(name.value) >= len("fox_bird") or len(fid.value) > 2, "the burst typed")
        await pilot.pause()
        # Back with shift+tab the id is selected (as Textual's inputs do on focus): 34 replaces it.
        assert (fid.value, name.value) == ("34", "fox_bird")
        # Enter moves on from a one-line field just as fast.
        burst(app, ["shift+tab", *"5", "enter", *"_x"])
        await wait_until(pilot, lambda: name.value.endswith("_x") or len(fid.value) > 1, "the second burst typed")
        await pilot.pause()
        assert (fid.value, name.value) == ("5", "fox_bird_x")
