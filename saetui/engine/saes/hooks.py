"""An SAE's hook name read into (layer, component), deferring what flags can supply."""

from __future__ import annotations

from typing import Any

from ..errors import UserError
from ..model import HookSite, UnknownHookName, canonical_component, hook_from_name
from .files import shown


class SAEHook:
    """layer/component None where the file does not say (then --layer/--component must)."""

    def __init__(self, layer: int | None = None, component: str | None = None, post_norm: bool = False, problem: str | None = None) -> None:
        self.layer, self.component, self.post_norm, self.problem = layer, component, post_norm, problem


def hook_for_sae(name: Any, model_class_name: Any, where: str) -> SAEHook:
    """Read a hook name from an SAE file. Out-of-scope hooks raise; unreadable ones leave
    layer and component to the flags (the engine asks for them)."""
    if name is None:
        return SAEHook()
    if not isinstance(name, str):
        raise UserError(f"{where}: 'hook_name' must be a string, found {shown(name)}", "Fix it, or pass --layer and --component")
    try:
        site: HookSite = hook_from_name(name)
    except UnknownHookName as exc:
        return SAEHook(problem=exc.one_line())
    return SAEHook(site.layer, canonical_component(site.component), site.post_norm)
