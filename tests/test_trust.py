"""Issue 16: no escape reaches the terminal, caches never serve wrong numbers, the user's
files keep their permissions and a backup, registries that are odd open read-only, and
bad input is one clear line. Each test fails without its fix."""

from __future__ import annotations

import json
import os
import stat
import unicodedata
from pathlib import Path

import pytest

from saetui import cli
from saetui.engine import cache
from saetui.engine.errors import UserError
from saetui.engine.registry import Registry
from saetui.ui.safe_text import dumps_json_safe, needs_escape, visible

# Characters a crafted file uses to hide, reorder or take over the terminal.
HOSTILE = [
    "\x1b]0;pwned\x07",  # set the terminal title
    "\x1b[2J",  # clear the screen
    "\x9b2J",  # the same through C1 CSI
    "\u2028", "\u2029",  # line / paragraph separators
    "\u061c", "\u200e", "\u200f",  # bidi marks
    "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",  # embeddings and overrides
    "\u2066", "\u2067", "\u2068", "\u2069",  # isolates
    "\u200b", "\ufeff", "\u00ad",  # zero-width space, BOM, soft hyphen
    "\U000e0041",  # a tag character
    "\x7f", "\x85",
]


def _raw_unsafe(text: str) -> list[str]:
    """Every character in `text` that would reach a terminal raw and is not plain text."""
    return [
        f"U+{ord(ch):04X}"
        for ch in text
        if ch != "\n" and (unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co")) and ch not in "\u200c\u200d"
    ]


# -- the escaping rule -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", HOSTILE)
def test_visible_escapes_every_control_format_and_separator_character(bad):
    shown = visible(f"a{bad}b")
    assert _raw_unsafe(shown) == []
    assert shown.startswith("a") and shown.endswith("b") and len(shown) > 2
    # the escape names the character, so nothing is silently lost
    assert f"{ord(bad[-1]):x}" in shown.lower() or "\\x" in shown


def test_visible_keeps_ordinary_text_and_joiners():
    text = "naïve café 東京 שלום مرحبا می‌خواهم 👨‍👩‍👧 ok"
    assert visible(text) == text
    assert visible("a\nb\tc") == "a↵b⇥c"
    assert visible(visible("x\x1by")) == visible("x\x1by")  # idempotent


def test_every_category_the_rule_names_is_escaped():
    # independent of the implementation: scan the BMP by Unicode category
    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        ch = chr(code)
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch not in "\n\t\u200c\u200d":
            assert needs_escape(ch), f"U+{code:04X}"
            assert ch not in visible(ch), f"U+{code:04X}"


def test_json_output_escapes_control_and_bidi_but_keeps_values():
    value = {"name\u202e": "a\x9b2J\u2028b\x1b[31m\U000e0041 é 東京", "n": [1, 2.5, None]}
    text = dumps_json_safe(value, indent=2)
    assert _raw_unsafe(text) == []
    assert json.loads(text) == value
    assert "é 東京" in text  # ordinary text stays readable, not \\u-escaped


def test_user_error_line_is_escaped_by_construction():
    err = UserError("SAE metadata.model_name \x1b]0;pwned\x07\x1b[2J is not cached", "Pass --model\u2028with a directory")
    line = err.one_line()
    assert _raw_unsafe(line) == [] and "\n" not in line
    assert "\\x1b]0;pwned" in line
    assert str(err) == line


def test_fix_never_offers_a_command_quoting_unusual_text():
    ok = UserError("Model a/b is not cached", "Run `huggingface-cli download a/b`, or pass --download")
    assert "`huggingface-cli download a/b`" in ok.one_line()
    for name in ("a/b; rm -rf ~", "$(curl evil)", "a/b`touch x`", "a/b | sh", "x\x1b[2J", "a/b --local-dir=/etc"):
        line = UserError(f"Model {name} is not cached", f"Run `huggingface-cli download {name}`, or pass --download").one_line()
        assert "huggingface-cli download" not in line, line
        assert "pass --download" in line


def test_cli_prints_user_and_internal_errors_as_one_escaped_line(monkeypatch, capsys):
    def boom_user(argv):
        raise UserError("Column \x1b]0;t\x07\u202e named in the dataset", "Pass --text-column")

    monkeypatch.setattr(cli, "_dispatch", boom_user)
    assert cli.main(["eval"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and _raw_unsafe(err) == []

    def boom_bug(argv):
        raise KeyError("model_type \x1b[2J\u2029")

    monkeypatch.setattr(cli, "_dispatch", boom_bug)
    assert cli.main(["eval"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and _raw_unsafe(err) == [] and "internal error: KeyError" in err


def test_bad_flag_is_one_line_without_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["eval", "--max-tokens", "lots"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage:" not in err and "--max-tokens" in err and "--help" in err


def test_library_log_lines_are_quiet_unless_debug(monkeypatch):
    import logging

    for var in ("TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(logging.getLogger("datasets"), "level", logging.NOTSET)
    cli._quiet_libraries(debug=True)
    assert "DATASETS_VERBOSITY" not in os.environ
    cli._quiet_libraries(debug=False)
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "error" and os.environ["DATASETS_VERBOSITY"] == "error"
    assert logging.getLogger("datasets").getEffectiveLevel() >= logging.ERROR


class _ClosedApp:
    def __init__(self, return_code=0, exception=None, fatal_error=None):
        self.return_code = return_code
        self._exception = exception
        self.fatal_error = fatal_error


def test_app_crash_exits_non_zero_with_one_line(capsys):
    assert cli.app_exit_status(_ClosedApp(1, RuntimeError("boom \x1b[2J"))) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError" in err and _raw_unsafe(err) == []
    assert cli.app_exit_status(_ClosedApp(2, None, "SAE \x1b]0;x\x07 broken.")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and _raw_unsafe(err) == []
    assert cli.app_exit_status(_ClosedApp(0)) == 0
    assert capsys.readouterr().err == ""


def test_textual_crash_is_reported_by_exit_status():
    """A real Textual app that raises: its return code is 1 and our status says so."""
    import asyncio

    from textual.app import App

    class Crashing(App):
        fatal_error = None

        def on_mount(self) -> None:
            raise RuntimeError("crash in a handler")

    app = Crashing()

    async def drive():
        try:
            async with app.run_test():
                pass
        except RuntimeError:
            pass

    asyncio.run(drive())
    assert app.return_code == 1
    assert cli.app_exit_status(app) == 1


# -- caches ------------------------------------------------------------------------------------


def _entry_path(tmp_path):
    return tmp_path / "report" / "k.json"


def test_cache_entry_round_trips_with_format_and_checksum(tmp_path):
    path = _entry_path(tmp_path)
    data = {"mse": 0.0123, "counts": [1, 2, 3], "name": "x"}
    assert cache.write_entry(path, data)
    on_disk = json.loads(path.read_text())
    assert on_disk["saetui_cache"] == cache.CACHE_FORMAT and len(on_disk["sha256"]) == 64
    assert cache.read_entry(path) == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "tamper",
    ["edit-value", "rename-key", "drop-key", "truncate", "garbage", "empty", "old-format", "no-envelope", "binary"],
)
def test_damaged_or_changed_cache_entry_is_a_miss(tmp_path, tamper):
    path = _entry_path(tmp_path)
    cache.write_entry(path, {"metrics": {"mse": 0.01}, "threshold": 1.5})
    envelope = json.loads(path.read_text())
    if tamper == "edit-value":
        envelope["data"]["metrics"]["mse"] = 0.5
    elif tamper == "rename-key":
        envelope["data"]["metricz"] = envelope["data"].pop("metrics")
    elif tamper == "drop-key":
        del envelope["data"]["threshold"]
    elif tamper == "old-format":
        envelope["saetui_cache"] = cache.CACHE_FORMAT - 1
    elif tamper == "no-envelope":
        envelope = envelope["data"]
    raw = json.dumps(envelope).encode()
    if tamper == "truncate":
        raw = raw[: len(raw) // 2]
    elif tamper == "garbage":
        raw = b"{not json"
    elif tamper == "empty":
        raw = b""
    elif tamper == "binary":
        raw = os.urandom(256)
    path.write_bytes(raw)
    assert cache.read_entry(path) is None


def test_validator_decides_structure(tmp_path):
    path = _entry_path(tmp_path)
    cache.write_entry(path, {"threshold": "1.5"})
    shape = {"threshold": float}
    assert cache.read_entry(path) == {"threshold": "1.5"}
    assert cache.read_entry(path, lambda d: cache.has_shape(d, shape)) is None
    assert cache.read_entry(path, lambda d: d["missing"] > 0) is None  # a raising validator is a miss
    cache.write_entry(path, {"threshold": 1.5})
    assert cache.read_entry(path, lambda d: cache.has_shape(d, shape)) == {"threshold": 1.5}
    assert not cache.has_shape({"n": True}, {"n": int})
    assert cache.has_shape({"xs": [1, 2]}, {"xs": [int]}) and not cache.has_shape({"xs": [1, "2"]}, {"xs": [int]})


def test_cache_path_that_is_a_directory_or_fifo_or_unreadable_is_a_miss(tmp_path):
    path = _entry_path(tmp_path)
    path.mkdir(parents=True)
    assert cache.read_entry(path) is None
    assert cache.write_entry(path, {"a": 1}) is False  # no crash: just not cached
    fifo = tmp_path / "report" / "fifo.json"
    os.mkfifo(fifo)
    assert cache.read_entry(fifo) is None  # does not hang
    blocked = tmp_path / "blocked"
    blocked.write_text("{}")
    (tmp_path / "notdir").write_text("")
    assert cache.read_entry(tmp_path / "notdir" / "x.json") is None
    assert cache.write_entry(tmp_path / "notdir" / "x.json", {"a": 1}) is False


def test_old_names_are_the_checked_entries(tmp_path):
    # engine.py and evaluate.py call these names for their caches
    path = _entry_path(tmp_path)
    cache.atomic_write_json(path, {"threshold": 2.0})
    assert cache.read_json(path) == {"threshold": 2.0}
    envelope = json.loads(path.read_text())
    envelope["data"]["threshold"] = 8.0
    path.write_text(json.dumps(envelope))
    assert cache.read_json(path) is None


def test_every_cache_key_includes_the_code_format(monkeypatch):
    key = cache.cache_key(a=1, b=[2, 3])
    assert key == cache.cache_key(b=[2, 3], a=1)
    monkeypatch.setattr(cache, "CACHE_FORMAT", cache.CACHE_FORMAT + 1)
    assert cache.cache_key(a=1, b=[2, 3]) != key


# -- the user's files --------------------------------------------------------------------------


def test_user_file_keeps_its_mode_and_a_backup(tmp_path):
    path = tmp_path / "my_sae_evaluation.json"
    path.write_text('{"old": true}\n')
    os.chmod(path, 0o644)
    backup = cache.write_user_file(path, '{"new": true}\n')
    assert path.read_text() == '{"new": true}\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert backup == tmp_path / "my_sae_evaluation.json.bak"
    assert backup.read_text() == '{"old": true}\n' and stat.S_IMODE(backup.stat().st_mode) == 0o644
    os.chmod(path, 0o640)
    cache.write_user_file(path, '{"newer": true}\n')
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert backup.read_text() == '{"new": true}\n'
    assert cache.write_user_file(path, '{"newer": true}\n') is None  # same content: no new backup


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_new_user_file_gets_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = tmp_path / f"new-{umask:o}.json"
        cache.write_user_file(path, "{}\n")
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
        assert cache.current_umask() == umask
    finally:
        os.umask(old)


def test_write_report_json_backs_up_and_keeps_mode(tmp_path):
    from saetui.engine.evaluate import write_report_json

    class _Report:
        def to_json(self):
            return {"score": {"total": 4.0}, "sae_path": "x\u202ey"}

    target = tmp_path / "my_sae_evaluation.json"
    target.write_text('{"score": {"total": 2.0}}\n')
    os.chmod(target, 0o644)
    assert write_report_json(_Report(), None, target) == target
    assert json.loads(target.read_text())["score"]["total"] == 4.0
    assert _raw_unsafe(target.read_text()) == []
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert json.loads((tmp_path / "my_sae_evaluation.json.bak").read_text())["score"]["total"] == 2.0


def test_unwritable_json_target_is_reported_before_any_work(tmp_path, capsys):
    for bad in (tmp_path / "missing-folder" / "r.json", tmp_path):
        code = cli.main(["eval", "--json", str(bad), "--model", str(tmp_path / "no-model")])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "--json" in err, err


def test_top_texts_zero_budget_is_refused(capsys):
    assert cli.main(["top-texts", "5", "--max-tokens", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--max-tokens 0" in err


def test_context_len_beyond_the_models_positions_is_refused(capsys, tiny_setup):
    from saetui.engine.model import load_model

    positions = load_model(tiny_setup["model"]).model.args.max_position_embeddings
    argv = ["top-features", tiny_setup["sae"], "hello", "--model", tiny_setup["model"], "--dataset", tiny_setup["dataset"]]
    assert cli.main([*argv, "--context-len", str(positions + 1)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--context-len {positions}" in err
    assert cli.main([*argv, "--context-len", "16"]) == 0


# -- registries --------------------------------------------------------------------------------


def test_lock_file_link_is_not_followed(tmp_path):
    path = tmp_path / "sae.features.json"
    target = tmp_path / "elsewhere" / "created-by-link"
    target.parent.mkdir()
    (tmp_path / "sae.features.json.lock").symlink_to(target)
    reg = Registry.load(path)
    reg.set(1, {"name": "x"})
    with pytest.raises(UserError, match="lock file .* is a link"):
        reg.save()
    assert not target.exists()


def test_read_only_registry_file_opens_read_only_and_says_so(tmp_path):
    path = tmp_path / "sae.features.json"
    path.write_text('{"3": {"name": "kept"}}\n')
    os.chmod(path, 0o444)
    reg = Registry.load(path)
    assert reg.read_only and reg.name(3) == "kept"
    assert "read-only" in reg.warning
    reg.set(4, {"name": "new"})
    with pytest.raises(UserError, match="read-only file"):
        reg.save()
    assert json.loads(path.read_text()) == {"3": {"name": "kept"}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o444


def test_huge_digit_key_is_not_an_id_and_never_crashes(tmp_path):
    path = tmp_path / "sae.features.json"
    key = "9" * 5000
    path.write_text(json.dumps({key: {"name": "odd"}, "7": {"name": "seven"}}))
    reg = Registry.load(path)
    assert not reg.read_only
    assert reg.feature_ids() == [7] and len(reg) == 1
    reg.set(8, {"name": "eight"})
    reg.save()
    saved = json.loads(path.read_text())
    assert saved[key] == {"name": "odd"} and saved["8"]["name"] == "eight"


def test_deeply_nested_registry_opens_read_only(tmp_path):
    path = tmp_path / "sae.features.json"
    path.write_text('{"1": ' + "[" * 100_000 + "]" * 100_000 + "}")
    reg = Registry.load(path)
    assert reg.read_only and "nested too deeply" in reg.warning
    assert reg.feature_ids() == []


def test_registry_that_is_a_fifo_or_directory_opens_read_only(tmp_path):
    fifo = tmp_path / "fifo.features.json"
    os.mkfifo(fifo)
    assert Registry.load(fifo).read_only  # and does not hang
    folder = tmp_path / "dir.features.json"
    folder.mkdir()
    assert Registry.load(folder).read_only


def test_new_registry_gets_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        reg = Registry.load(tmp_path / "sae.features.json")
        reg.set(1, {"name": "a"})
        reg.save()
        assert stat.S_IMODE((tmp_path / "sae.features.json").stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_registry_json_escapes_hostile_text(tmp_path, capsys):
    path = tmp_path / "sae.features.json"
    reg = Registry.load(path)
    reg.set(1, {"name": "a\x1b[2J\u202eb", "examples": ["x\x9by\u2028"]})
    reg.save()
    text = path.read_text()
    assert _raw_unsafe(text) == []
    assert Registry.load(path).name(1) == "a\x1b[2J\u202eb"


@pytest.mark.parametrize("model_name", ["evil/\x1b]0;pwned\x07\x1b[2Jx", "evil/x;touch${IFS}pwned", "evil/a\u202eb`id`"])
def test_crafted_model_name_in_sae_metadata_gives_one_safe_line(tmp_path, capsys, model_name):
    from support import write_sae

    sae = write_sae(tmp_path / "crafted.mlx", metadata={"layer": 1, "component": "mlp", "model_name": model_name})
    assert cli.main(["eval", str(sae), "--dataset", str(tmp_path / "none.txt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and _raw_unsafe(err) == [], err
    assert "\x1b" not in err and "pwned\x07" not in err
    assert f"download {model_name}" not in err  # never offered as a command to paste


# -- items 19 and 20 (the parts outside the screens) -------------------------------------------


def test_constant_l0_is_one_bar_said_in_words():
    from rich.console import Console

    from saetui.engine.report import HistogramBins, L0Distribution
    from saetui.ui.report import constant_l0, l0_plot

    class Report:  # only the section the plot reads
        l0_distribution = L0Distribution(mean=32.0, median=32.0, p10=32.0, p90=32.0, k=32, histogram=HistogramBins([32.0, 33.0], [2016]))

    report = Report()
    assert constant_l0(report) == 32.0
    console = Console(width=80, record=True)
    console.print(l0_plot(report, 60))
    text = console.export_text()
    assert "L0 = k = 32 for every token" in text and "2,016 tokens" in text
    assert text.count("█") < 60 and len(text.strip().splitlines()) == 2  # one bar, not a block
    report.l0_distribution.histogram = HistogramBins([30.0, 31.0, 32.0, 33.0], [3, 0, 5])
    assert constant_l0(report) is None


@pytest.mark.parametrize(
    "clean, sae, zero, flagged",
    [(3.0, 3.2, 6.0, False), (3.0, 2.9, 6.0, True), (5.0, 5.5, 4.0, True), (5.0, 4.5, 5.0, None)],
)
def test_ce_loss_recovered_outside_0_1_is_flagged_with_the_reason(clean, sae, zero, flagged):
    from saetui.engine import metrics
    from saetui.engine.evaluate import ce_recovered_caveat

    recovered = metrics.ce_loss_recovered(clean, sae, zero)
    independent = None if abs(zero - clean) < 1e-9 else (zero - sae) / (zero - clean)
    assert recovered == independent
    caveat = ce_recovered_caveat({"ce_loss_recovered": recovered, "ce_loss_clean": clean, "ce_loss_sae": sae, "ce_loss_zero": zero})
    if flagged is None:
        assert recovered is None and caveat is None
    elif flagged:
        assert caveat and "far from the model's training data" in caveat and f"{recovered:.3f}" in caveat
    else:
        assert caveat is None and 0 <= recovered <= 1


def test_registry_json_printer_escapes_control_and_bidi(tmp_path, capsys, tiny_setup):
    path = tmp_path / "reg.json"
    entries = {"5": {"name": "a\x9b2J\u202eb\u2028", "description": "\x1b]0;t\x07", "examples": [], "confidence": "low"}}
    path.write_text(json.dumps(entries))
    assert cli.main(["registry", tiny_setup["sae"], "--registry", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert _raw_unsafe(out) == []
    assert json.loads(out) == entries


def test_context_len_is_checked_before_the_app_opens(tiny_setup, capsys):
    from saetui.commands.checks import check_context_len_against, positions_in_config

    positions = json.loads((Path(tiny_setup["model"]) / "config.json").read_text())["max_position_embeddings"]
    assert positions_in_config(Path(tiny_setup["model"])) == positions
    with pytest.raises(UserError, match=f"Pass --context-len {positions} or less"):
        check_context_len_against(positions + 1, Path(tiny_setup["model"]))
    check_context_len_against(positions, Path(tiny_setup["model"]))
    # the app's own command line: one line, exit 2, before any frame
    assert cli.main([tiny_setup["sae"], "--model", tiny_setup["model"], "--dataset", tiny_setup["dataset"],
                     "--context-len", str(positions + 1)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    for bad in ("0", "1", "-3"):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["eval", "--context-len", bad])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "2 or more" in err


def test_app_crash_prints_one_line_and_the_traceback_only_under_debug(capfd):
    from textual.app import App

    class Crashing(App):
        fatal_error = None

        def on_mount(self) -> None:
            raise RuntimeError("crash \x1b[2J in a handler")

    for debug in (False, True):
        app = Crashing()
        cli.quiet_crash_traceback(app, debug)
        app.run(headless=True)
        status = cli.app_exit_status(app)
        err = capfd.readouterr().err
        assert status == 1
        assert ("Traceback" in err or "RuntimeError" in err.split("saetui:")[0]) is debug, err[-500:]
        assert err.strip().splitlines()[-1].startswith("saetui: internal error: RuntimeError")
        if not debug:
            assert err.count("\n") == 1 and _raw_unsafe(err) == []
