"""SAELens and sparsify SAEs through `saetui eval` on a tiny model, the layer/component
flags standing in for an unreadable hook, and SAEs opened from the Hugging Face cache."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
from formats_support import FORMATS, reference, write_saelens, write_sparsify
from support import HIDDEN

from saetui.cli import main
from saetui.engine.errors import UserError
from saetui.engine.model import Hook, load_model
from saetui.engine.sae import load_sae, resolve_sae_location

FAST = ["--context-len", "32", "--max-tokens", "256"]


def _eval(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["eval", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_saelens_jumprelu_through_eval(tiny_setup, tmp_path, capsys):
    folder, cfg, w = write_saelens(tmp_path / "jr", "jumprelu", d=HIDDEN, m=128, hook_name="blocks.1.hook_mlp_out", model_name=tiny_setup["model"])
    target = tmp_path / "report.json"
    rc, out, err = _eval(capsys, str(folder), "--dataset", tiny_setup["dataset"], *FAST, "--json", str(target))
    assert rc == 0, err
    data = json.loads(target.read_text())
    assert data["architecture"]["type"] == "SAELens JumpReLU" and data["architecture"]["k"] is None
    assert (data["layer"], data["component"], data["architecture"]["d_hidden"]) == (1, "mlp", 128)
    assert "no k: L0 varies by token" in out and "SAELens JumpReLU" in out
    # The report's reconstruction is the SAE's on the model's own activations: check the
    # first context's MSE-free quantity independently, L0 of the first token.
    runner = load_model(tiny_setup["model"])
    ref = reference()
    acts = np.array(runner.activations(mx.array([[1, 17, 42, 99]]), Hook(1, "mlp")))[0]
    z_ref, _ = ref.saelens_forward({"architecture": "jumprelu", "d_in": HIDDEN, "apply_b_dec_to_input": True, "normalize_activations": "none"}, w, acts)
    z = np.array(load_sae(folder).encode(mx.array(acts)))
    np.testing.assert_allclose(z, z_ref, atol=1e-4, rtol=1e-4)


def test_saelens_topk_through_eval_with_the_cache(tiny_setup, tmp_path, capsys):
    folder, cfg, w = write_saelens(tmp_path / "tk", "topk", d=HIDDEN, m=128, k=8, hook_name="blocks.2.hook_resid_pre", model_name=tiny_setup["model"])
    rc, out, err = _eval(capsys, str(folder), "--dataset", tiny_setup["dataset"], *FAST)
    assert rc == 0, err
    data = json.loads((tmp_path / "tk_evaluation.json").read_text())
    assert (data["layer"], data["component"], data["architecture"]["k"]) == (1, "resid", 8)
    assert data["sparsity"]["l0_mean"] <= 8
    rc, out, err = _eval(capsys, str(folder), "--dataset", tiny_setup["dataset"], *FAST)
    assert rc == 0 and "(cached)" in out
    # Changing k in cfg.json is another SAE: the cached report is not served.
    cfg["k"] = 4
    (folder / "cfg.json").write_text(json.dumps(cfg))
    rc, out, err = _eval(capsys, str(folder), "--dataset", tiny_setup["dataset"], *FAST)
    assert rc == 0 and "(cached)" not in out
    assert json.loads((tmp_path / "tk_evaluation.json").read_text())["architecture"]["k"] == 4


def test_sparsify_through_eval(tiny_setup, tmp_path, capsys):
    write_sparsify(tmp_path / "run", "layers.1.mlp", d=HIDDEN, expansion=2, k=6, model=tiny_setup["model"])
    target = tmp_path / "sp.json"
    rc, out, err = _eval(capsys, str(tmp_path / "run"), "--dataset", tiny_setup["dataset"], *FAST, "--json", str(target))
    assert rc == 0, err
    data = json.loads(target.read_text())
    assert data["architecture"]["type"] == "sparsify TopK k=6" and (data["layer"], data["component"]) == (1, "mlp")
    assert data["sparsity"]["l0_mean"] <= 6


def test_flags_stand_in_for_an_unreadable_hook(tiny_setup, tmp_path, capsys):
    folder, _, _ = write_saelens(tmp_path / "odd", "standard", d=HIDDEN, m=96, hook_name="my_point", model_name=tiny_setup["model"])
    rc, out, err = _eval(capsys, str(folder), "--dataset", tiny_setup["dataset"], *FAST)
    assert rc == 2 and "--component" in err and err.count("\n") == 1
    rc, out, err = _eval(capsys, str(folder), "--dataset", tiny_setup["dataset"], *FAST, "--layer", "0", "--component", "attn")
    assert rc == 0, err


def test_width_mismatch_is_one_line(tiny_setup, tmp_path, capsys):
    folder, _, _ = write_saelens(tmp_path / "wide", "standard", d=32, m=96, model_name=tiny_setup["model"])
    rc, out, err = _eval(capsys, str(folder), "--dataset", tiny_setup["dataset"], *FAST)
    assert rc == 2 and "expects d_model=32" in err and err.count("\n") == 1


# -- the Hugging Face cache ----------------------------------------------------------------------------


def _fake_hub(root, repo: str, files: dict[str, bytes]) -> None:
    """The local cache layout huggingface_hub reads: refs/main -> snapshots/<commit>/..."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = root / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    for rel, data in files.items():
        blob = base / "blobs" / f"{abs(hash(rel)):x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = base / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blob)


def test_sae_from_the_hugging_face_cache(tmp_path, monkeypatch):
    if not FORMATS.exists():
        pytest.skip("../shared is absent")
    hub = tmp_path / "hub"
    leaf = "layer_3/width_1k/average_l0_11"
    _fake_hub(hub, "google/gemma-scope-2b-pt-res", {f"{leaf}/params.npz": (FORMATS / "gemma-scope-2b-pt-res" / leaf / "params.npz").read_bytes()})
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    spec = f"google/gemma-scope-2b-pt-res:{leaf}"
    assert resolve_sae_location(spec).parts[-3:] == tuple(leaf.split("/"))
    sae = load_sae(spec)
    expected = np.load(FORMATS / "gemma-scope-2b-pt-res.expected.npz")
    np.testing.assert_allclose(np.array(sae.encode(mx.array(expected["x"]))), expected["features"], atol=1e-4, rtol=1e-4)
    # The repo name in the cache folder gives model, layer and site, as for a release tree.
    assert (sae.metadata.model_name, sae.metadata.layer, sae.metadata.component) == ("gemma-2-2b", 3, "resid")
    with pytest.raises(UserError, match="has no folder 'layer_9/width_1k/average_l0_11'"):
        load_sae("google/gemma-scope-2b-pt-res:layer_9/width_1k/average_l0_11")
    with pytest.raises(UserError, match="not in the local Hugging Face cache.*--download"):
        load_sae("google/gemma-scope-9b-pt-res:layer_3/width_16k/average_l0_11")
    with pytest.raises(UserError, match=r"may not contain '\.\.'"):
        load_sae("google/gemma-scope-2b-pt-res:../../etc")


def test_sparsify_hookpoint_from_the_cache_through_the_cli(tiny_setup, tmp_path, monkeypatch, capsys):
    run = tmp_path / "made"
    folder, _, _ = write_sparsify(run, "layers.2", d=HIDDEN, expansion=2, k=4, model=tiny_setup["model"])
    files = {f"layers.2/{p.name}": p.read_bytes() for p in folder.iterdir()}
    files["config.json"] = (run / "config.json").read_bytes()
    _fake_hub(tmp_path / "hub", "someone/sae-tiny", files)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    target = tmp_path / "r.json"
    rc, out, err = _eval(capsys, "someone/sae-tiny:layers.2", "--dataset", tiny_setup["dataset"], *FAST, "--json", str(target))
    assert rc == 0, err
    assert json.loads(target.read_text())["layer"] == 2
