"""The feature registry file: format, location, atomic saves, read-only fallback, merging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from saetui.engine.errors import UserError
from saetui.engine.registry import Registry, default_registry_path

ROOT = Path(__file__).resolve().parents[1]

GUIDE_EXAMPLE = {
    "1234": {"name": "mathematical_equations", "description": "Activates on mathematical formulas and equations", "examples": ["2+2=4", "E=mc²"], "confidence": "high"},
    "5678": {"name": "geographic_locations", "description": "Activates on city and country names", "examples": ["Paris, France"], "confidence": "high", "seen_by": "other-tool"},
    "notes": {"written_by": "another tool"},
}


def _write(path: Path, obj) -> bytes:
    blob = json.dumps(obj, indent=2).encode()
    path.write_bytes(blob)
    return blob


# -- where it lives -----------------------------------------------------------------------


def test_default_path_is_beside_the_sae(tmp_path):
    sae = tmp_path / "my_sae.mlx"
    sae.mkdir()
    assert default_registry_path(sae, is_demo=False) == tmp_path / "my_sae.features.json"


def test_unwritable_folder_goes_to_the_data_dir(tmp_path, monkeypatch):
    folder = tmp_path / "readonly"
    sae = folder / "my_sae.mlx"
    sae.mkdir(parents=True)
    real_access = os.access
    # Root ignores permission bits, so deny writing the way the OS would for a normal user.
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == folder and mode & os.W_OK else real_access(p, mode, **kw))
    path = default_registry_path(sae, is_demo=False)
    data = Path(os.environ["SAETUI_DATA_DIR"])
    assert path.parent == data / "registries"
    assert path.name.startswith("my_sae-") and path.name.endswith(".features.json")
    # Keyed by the SAE: another SAE of the same name elsewhere gets another file.
    other = tmp_path / "elsewhere" / "my_sae.mlx"
    other.mkdir(parents=True)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False)
    assert default_registry_path(other, is_demo=False) != path


def test_demo_registry_lives_in_the_data_dir(tmp_path):
    path = default_registry_path(tmp_path / "pkg" / "demo_sae.mlx", is_demo=True)
    assert path == Path(os.environ["SAETUI_DATA_DIR"]) / "registries" / "demo.features.json"


# -- reading and writing ------------------------------------------------------------------


def test_round_trip_in_the_guides_format(tmp_path):
    path = tmp_path / "sae.features.json"
    reg = Registry.load(path)
    assert len(reg) == 0 and not reg.read_only and reg.name(3) is None
    reg.set(12, {"name": "cities", "description": "City names", "examples": ["Paris", "Tokyo"], "confidence": "medium"})
    reg.set(3, {"name": "  numbers "})
    reg.save()
    on_disk = json.loads(path.read_text())
    assert on_disk == {
        "3": {"name": "numbers", "description": "", "examples": [], "confidence": "low"},
        "12": {"name": "cities", "description": "City names", "examples": ["Paris", "Tokyo"], "confidence": "medium"},
    }
    assert list(on_disk) == ["3", "12"]  # numeric order
    again = Registry.load(path)
    assert again.name(12) == "cities" and again.get(3)["confidence"] == "low"
    assert again.feature_ids() == [3, 12]


def test_unknown_fields_and_entries_are_kept(tmp_path):
    path = tmp_path / "r.json"
    _write(path, GUIDE_EXAMPLE)
    reg = Registry.load(path)
    assert reg.feature_ids() == [1234, 5678] and reg.name(5678) == "geographic_locations"
    reg.set(5678, {"name": "places", "confidence": "medium"})
    reg.delete(1234)
    reg.save()
    on_disk = json.loads(path.read_text())
    assert on_disk["notes"] == {"written_by": "another tool"}
    assert on_disk["5678"] == {**GUIDE_EXAMPLE["5678"], "name": "places", "confidence": "medium"}
    assert "1234" not in on_disk


def test_previous_version_kept_as_backup(tmp_path):
    path = tmp_path / "r.json"
    first = _write(path, GUIDE_EXAMPLE)
    reg = Registry.load(path)
    reg.set(1, {"name": "one"})
    reg.save()
    assert (tmp_path / "r.json.bak").read_bytes() == first
    second = path.read_bytes()
    reg.set(2, {"name": "two"})
    reg.save()
    assert (tmp_path / "r.json.bak").read_bytes() == second


def test_saves_keep_the_files_permissions(tmp_path):
    new = tmp_path / "new.json"
    reg = Registry.load(new)
    reg.set(1, {"name": "one"})
    reg.save()
    assert new.stat().st_mode & 0o777 == 0o644  # not the temporary file's 0600
    shared = tmp_path / "shared.json"
    _write(shared, GUIDE_EXAMPLE)
    shared.chmod(0o664)
    reg = Registry.load(shared)
    reg.set(1, {"name": "one"})
    reg.save()
    assert shared.stat().st_mode & 0o777 == 0o664
    assert (tmp_path / "shared.json.bak").stat().st_mode & 0o777 == 0o664


def test_bad_values_are_user_errors(tmp_path):
    reg = Registry.load(tmp_path / "r.json")
    with pytest.raises(UserError, match="high, medium or low"):
        reg.set(1, {"confidence": "certain"})
    with pytest.raises(UserError, match="negative"):
        reg.set(-1, {"name": "x"})
    with pytest.raises(UserError, match="list of texts"):
        reg.set(1, {"examples": "not a list"})


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2, 3]", b"\xff\xfe\x00garbage"])
def test_unreadable_file_opens_read_only_and_is_never_overwritten(tmp_path, content):
    path = tmp_path / "r.json"
    path.write_bytes(content)
    reg = Registry.load(path)
    assert reg.read_only and "read-only" in reg.warning and str(path) in reg.warning
    reg.set(1, {"name": "x"})  # in memory only
    with pytest.raises(UserError, match="will not overwrite"):
        reg.save()
    assert path.read_bytes() == content
    assert not (tmp_path / "r.json.bak").exists()


def test_file_corrupted_by_someone_else_after_opening_is_not_overwritten(tmp_path):
    path = tmp_path / "r.json"
    _write(path, GUIDE_EXAMPLE)
    reg = Registry.load(path)
    path.write_bytes(b'{"half": ')
    reg.set(1, {"name": "x"})
    with pytest.raises(UserError, match="cannot be read"):
        reg.save()
    assert path.read_bytes() == b'{"half": '


def test_export_writes_a_copy(tmp_path):
    path = tmp_path / "r.json"
    _write(path, GUIDE_EXAMPLE)
    reg = Registry.load(path)
    out = reg.export(tmp_path / "out" / "copy.json")
    assert json.loads(out.read_text()) == GUIDE_EXAMPLE
    with pytest.raises(UserError, match="registry itself"):
        reg.export(path)


def test_two_registries_merge_field_by_field(tmp_path):
    path = tmp_path / "r.json"
    _write(path, {"7": {"name": "old", "description": "old", "examples": [], "confidence": "low"}})
    a, b = Registry.load(path), Registry.load(path)
    a.set(7, {"name": "from a"})
    a.set(1, {"name": "a's"})
    a.save()
    b.set(7, {"description": "from b"})
    b.set(2, {"name": "b's"})
    b.save()
    on_disk = json.loads(path.read_text())
    assert on_disk["7"]["name"] == "from a" and on_disk["7"]["description"] == "from b"
    assert on_disk["1"]["name"] == "a's" and on_disk["2"]["name"] == "b's"
    assert b.name(1) == "a's"  # b now sees a's work too
    # A registry with nothing unsaved picks up another process's saves on refresh.
    assert a.name(2) is None
    assert a.refresh() and a.name(2) == "b's"


# -- real processes ----------------------------------------------------------------------------


def _python(code: str, *args: str) -> subprocess.Popen:
    # Extend PYTHONPATH, never replace it: the child must import what the parent imports.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_interrupted_save_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "r.json"
    before = _write(path, GUIDE_EXAMPLE)
    # The process dies between writing the new file and renaming it into place.
    crash = _python(
        """
        import os, sys
        from saetui.engine.registry import Registry
        target = sys.argv[1]
        reg = Registry.load(target)
        reg.set(1234, {"name": "half-saved"})
        real_replace = os.replace
        def replace(src, dst):
            if os.fspath(dst) == target:
                os._exit(9)
            real_replace(src, dst)
        os.replace = replace
        reg.save()
        """,
        str(path),
    )
    _, err = crash.communicate(timeout=60)
    assert crash.returncode == 9, err
    assert path.read_bytes() == before
    leftovers = list(tmp_path.glob(".r.json.*.tmp"))
    assert leftovers, "the crashed save should have left its temporary file"
    reg = Registry.load(path)
    assert not reg.read_only and reg.name(1234) == "mathematical_equations"
    reg.set(1, {"name": "after the crash"})
    reg.save()
    assert not list(tmp_path.glob(".r.json.*.tmp"))
    assert json.loads(path.read_text())["1234"]["name"] == "mathematical_equations"


def test_two_processes_do_not_lose_each_others_edits(tmp_path):
    path = tmp_path / "r.json"
    _write(path, {"0": {"name": "shared", "description": "shared", "examples": [], "confidence": "low"}, "notes": {"keep": True}})
    go = tmp_path / "go"
    writer = """
        import sys, time
        from pathlib import Path
        from saetui.engine.registry import Registry
        path, go, base, field = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
        reg = Registry.load(path)  # both open before either saves
        print("ready", flush=True)
        while not go.exists():
            time.sleep(0.005)
        reg.set(0, {field: f"from {base}"})
        reg.save()
        for i in range(25):
            reg.set(base + i, {"name": f"p{base}-{i}", "confidence": "medium"})
            reg.save()
        """
    procs = [_python(writer, str(path), str(go), "100", "name"), _python(writer, str(path), str(go), "200", "description")]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    on_disk = json.loads(path.read_text())
    for base in (100, 200):
        for i in range(25):
            assert on_disk[str(base + i)]["name"] == f"p{base}-{i}"
    assert on_disk["0"]["name"] == "from 100" and on_disk["0"]["description"] == "from 200"
    assert on_disk["notes"] == {"keep": True}
