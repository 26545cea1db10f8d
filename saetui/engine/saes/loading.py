"""Which format a path holds (by file names, spec §1), Hugging Face cache specs, and
`load_sae`."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import UserError
from .base import SAE
from .files import shown

NO_SAE = (
    "expected cfg.json + sae_weights.safetensors, cfg.json + sae.safetensors, params.npz, "
    "or config.json + weights.safetensors"
)
_HF_SPEC = re.compile(r"^([A-Za-z0-9][\w.-]*/[\w.-]+):(.*)$")
_PICKLES = (".pt", ".pth", ".pkl", ".bin", ".ckpt")


def _is(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _hf_cache_dir() -> str | None:
    return os.environ.get("HF_HUB_CACHE") or None


def resolve_sae_location(spec: str | Path, allow_download: bool = False) -> Path:
    """A local path for an SAE: a path as given, or `repo/id:folder/inside` resolved in the
    local Hugging Face cache (downloading that folder only when `allow_download`)."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists() or path.is_symlink():
        return path
    m = _HF_SPEC.match(text)
    if not m:
        raise UserError(f"SAE not found: {shown(text)[1:-1]}", "Check the path, or run saetui with no SAE to open the demo")
    repo, inside = m.group(1), m.group(2).strip("/")
    if ".." in inside.split("/"):
        raise UserError(f"{shown(text)}: the folder inside the repository may not contain '..'", "Name a folder of the repository, e.g. repo/id:layer_12/width_16k/average_l0_82")
    from huggingface_hub import snapshot_download

    # The folder, and a sparsify run's config.json at the root (it names the model).
    patterns = [f"{inside}/*", f"{inside}/**", "config.json"] if inside else None
    try:
        root = Path(snapshot_download(repo, local_files_only=not allow_download, allow_patterns=patterns, cache_dir=_hf_cache_dir()))
    except Exception as exc:  # noqa: BLE001 - hub errors are many; the user needs one line
        if allow_download:
            raise UserError(f"Could not download the SAE {shown(text)} ({type(exc).__name__})", "Check the repository id and folder, and your network") from None
        raise UserError(
            f"The SAE {shown(text)} is not in the local Hugging Face cache and saetui does not download by default",
            "Pass --download, or download the folder with huggingface-cli first",
        ) from None
    target = root / inside if inside else root
    if not _is(target):
        raise UserError(
            f"{shown(repo)} is in the Hugging Face cache but has no folder {shown(inside)}",
            "Check the folder name inside the repository, or pass --download to fetch it",
        )
    return target


def detect(path: Path) -> tuple[str, Path]:
    """(format, the file or folder to load) for a path, by file names."""
    if not _is(path):
        raise UserError(f"SAE not found: {shown(str(path))[1:-1]}", "Check the path, or run saetui with no SAE to open the demo")
    if path.is_file() or (path.exists() and not path.is_dir()):
        if path.suffix == ".npz":
            return "gemmascope", path
        if path.suffix in (".pt", ".pth"):
            raise _pickle_error(path)
        folder = path.parent
        try:
            fmt, target = detect(folder)
        except UserError:
            raise UserError(
                f"{shown(str(path))[1:-1]} is a file, not an SAE directory, and {shown(str(folder))[1:-1]} holds no SAE ({NO_SAE})",
                "Point saetui at the directory of one SAE",
            ) from None
        return fmt, target
    names = set(os.listdir(path)) if os.access(path, os.R_OK | os.X_OK) else None
    if names is None:
        raise UserError(f"{shown(str(path))[1:-1]} cannot be read (permission denied)", "Make the folder readable, or copy the SAE again")
    if "cfg.json" in names and "sae_weights.safetensors" in names:
        return "saelens", path
    if "cfg.json" in names and "sae.safetensors" in names:
        return "sparsify", path
    if "params.npz" in names:
        return "gemmascope", path / "params.npz"
    if "config.json" in names and "params.safetensors" in names:
        return "gemmascope2", path
    if "config.json" in names and "weights.safetensors" in names:
        return "mlxterp", path
    if "hyperparams.json" in names or (path / "checkpoints" / "final.safetensors").exists():
        raise UserError("Llama Scope files are not read directly", "Load it with SAELens and save_model it")
    # Folders that hold SAEs one level down: a sparsify run, a Gemma Scope release tree.
    hookpoints = _sparsify_hookpoints(path, names)
    if len(hookpoints) == 1:
        return "sparsify", hookpoints[0]
    if len(hookpoints) > 1:
        listed = ", ".join(str(h.relative_to(path)) for h in hookpoints[:8]) + (", ..." if len(hookpoints) > 8 else "")
        first = hookpoints[0].relative_to(path)
        raise UserError(f"{shown(str(path))[1:-1]} holds SAEs for several hookpoints: {shown(listed)[1:-1]}", f"Pass one: {shown(str(path / first))[1:-1]}")
    trees = _gemma_tree(path)
    if len(trees) == 1:
        return "gemmascope", trees[0]
    if len(trees) > 1:
        listed = ", ".join(str(t.parent.relative_to(path)) for t in trees[:6]) + (", ..." if len(trees) > 6 else "")
        raise UserError(f"{shown(str(path))[1:-1]} holds {len(trees)} Gemma Scope SAEs: {shown(listed)[1:-1]}", f"Pass one: {shown(str(trees[0].parent))[1:-1]}")
    # A config without its weights: say which file is missing.
    if "config.json" in names:
        return "mlxterp", path  # the mlxterp loader names the missing weights file
    if "cfg.json" in names:
        return "saelens-incomplete", path
    pickles = sorted(n for n in names if n.endswith(_PICKLES[:2]))
    if pickles:
        raise _pickle_error(path / pickles[0])
    raise UserError(
        f"{shown(str(path))[1:-1]} holds no SAE: no config.json, cfg.json or params.npz ({NO_SAE})",
        "Point saetui at the directory of one SAE: the .mlx directory mlxterp saved, or a SAELens, Gemma Scope or sparsify folder",
    )


def _pickle_error(path: Path) -> UserError:
    return UserError(
        f"{shown(str(path))[1:-1]} is a pickled torch checkpoint (unpickling runs code, so saetui never opens one)",
        "Convert it to SAELens format (cfg.json + sae_weights.safetensors)",
    )


def _sparsify_hookpoints(path: Path, names: set[str]) -> list[Path]:
    found: list[Path] = []
    for name in sorted(names):
        sub = path / name
        if not sub.is_dir():
            continue
        if (sub / "cfg.json").exists() and (sub / "sae.safetensors").exists():
            found.append(sub)
            continue
        try:  # seed<N> folders of a run trained with several init seeds
            seeds = sorted(s for s in os.listdir(sub) if re.fullmatch(r"seed\d+", s))
        except OSError:
            continue
        found.extend(sub / s for s in seeds if (sub / s / "cfg.json").exists() and (sub / s / "sae.safetensors").exists())
    return found


def _gemma_tree(path: Path) -> list[Path]:
    """layer_*/width_*/average_l0_*/params.npz under a release folder (fixed depth: never a
    walk of a big tree)."""
    return sorted(p for p in path.glob("layer_*/width_*/average_l0_*/params.npz"))


def load_sae(path: str | Path, allow_download: bool = False, norm_scaling_factor: float | None = None) -> SAE:
    """Load an SAE in any supported format: a folder or file path, or a Hugging Face cache
    spec `repo/id:folder` (see `resolve_sae_location`).

    Raises `UserError` with a one-line problem and fix for anything wrong with the files;
    every character of it printable (paths and names inside SAE folders are untrusted).
    """
    from ...ui.safe_text import visible

    try:
        return _load(path, allow_download, norm_scaling_factor)
    except UserError as exc:
        raise UserError(visible(exc.problem), visible(exc.fix)) from None


def _load(path: str | Path, allow_download: bool, norm_scaling_factor: float | None) -> SAE:
    location = resolve_sae_location(path, allow_download)
    fmt, target = detect(location)
    if fmt == "mlxterp":
        from .mlxterp import load_mlxterp

        return load_mlxterp(target)
    if fmt == "saelens":
        from .saelens import load_saelens

        return load_saelens(target, norm_scaling_factor)
    if fmt == "saelens-incomplete":
        raise UserError(f"{shown(str(target))[1:-1]} has cfg.json but no sae_weights.safetensors or sae.safetensors", "Copy the whole SAE folder again")
    if fmt == "sparsify":
        from .sparsify import load_sparsify

        return load_sparsify(target)
    from .gemmascope import load_gemmascope, load_gemmascope2

    if fmt == "gemmascope2":
        return load_gemmascope2(target)
    return load_gemmascope(target)
