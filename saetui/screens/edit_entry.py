"""The registry's edit dialog, and the one place registry edits are saved from.

Any screen edits a feature's entry by posting `EditRegistryEntry(feature_id)`; the app
calls `open_entry_editor`, which shows `EditEntryScreen`, saves what it returns and
tells every screen (`RegistryChanged`) so the names they show are refreshed.

Registry text is data, and so is text from a dataset: editing widgets show control
characters as visible escapes (`SafeInput`, `SafeTextArea`), and a field the user did
not touch is saved exactly as it was, escapes and all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static, TextArea

from ..engine.errors import UserError
from ..engine.registry import CONFIDENCES
from ..engine.tokens import token_strings
from ..messages import RegistryChanged
from ..ui.safe_text import visible

if TYPE_CHECKING:
    from ..engine.session import Session
    from ..app import SaetuiApp

# Examples pre-filled from the feature index's top contexts.
PREFILL_EXAMPLES = 5
EXAMPLE_CHARS = 120


# -- showing data in editing widgets ---------------------------------------------------------


def editable(text: str, multiline: bool = False) -> str:
    """`text` with control characters as visible escapes; newlines and tabs kept when multiline."""
    if not multiline:
        return visible(text)
    return "\n".join("\t".join(visible(part) for part in line.split("\t")) for line in text.split("\n"))


def restore(edited: str, original: str | None, multiline: bool = False) -> str:
    """What the user meant: the original text if the field still shows it unchanged."""
    if original is not None and edited == editable(original, multiline):
        return original
    return edited


class SafeInput(Input):
    """An Input that never receives raw control characters, even from a paste."""

    def _on_paste(self, event: events.Paste) -> None:
        event.text = editable(event.text.splitlines()[0] if event.text else "")


class SafeTextArea(TextArea):
    """A TextArea that never receives raw control characters, even from a paste."""

    async def _on_paste(self, event: events.Paste) -> None:
        event.text = editable(event.text, multiline=True)


# -- what the feature index knows, when one is open ------------------------------------------


def feature_density(session: "Session | None", feature_id: int) -> tuple[float | None, bool]:
    """(density, partial) from the feature index the session has open (complete or building).

    Never builds one: (None, False) until the feature screen has opened or built it.
    """
    index = session.index if session is not None else None
    if index is None:
        return None, False
    try:
        stats = index.feature(feature_id)
    except UserError:
        return None, False
    return float(stats.density), bool(stats.partial)


def top_context_examples(session: "Session | None", feature_id: int, limit: int = PREFILL_EXAMPLES) -> list[str]:
    """The feature's top contexts as one-line texts, from the open index (tokenizer only, no MLX)."""
    index = session.index if session is not None else None
    if index is None:
        return []
    try:
        stats = index.feature(feature_id)
    except UserError:
        return []
    out: list[str] = []
    for example in stats.top[:limit]:
        text = "".join(token_strings(session.tokenizer, example.window_tokens.tolist()))
        flat = " ".join(text.split())
        if flat:
            out.append(flat[:EXAMPLE_CHARS])
    return out


# -- the dialog ----------------------------------------------------------------------------------


class EditEntryScreen(ModalScreen[dict | None]):
    """Name, description, confidence and examples of one feature; returns the fields or None.

    With `feature_id=None` (adding), it asks for the feature id too and returns it as "id".
    """

    CSS_PATH = "registry.tcss"
    BINDINGS = [
        Binding("ctrl+s", "save", "Save"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(
        self,
        feature_id: int | None,
        entry: dict[str, Any] | None,
        d_sae: int | None = None,
        suggested_examples: list[str] | None = None,
        named: Callable[[int], str | None] | None = None,
    ) -> None:
        super().__init__()
        self.feature_id = feature_id
        self.original = entry or {}
        self.d_sae = d_sae
        self.suggested_examples = suggested_examples or []
        # When adding: the registry's name for an id, so an existing entry is not overwritten.
        self.named = named

    def compose(self) -> ComposeResult:
        entry = self.original
        name = entry.get("name") if isinstance(entry.get("name"), str) else ""
        description = entry.get("description") if isinstance(entry.get("description"), str) else ""
        examples = [e for e in entry.get("examples") or [] if isinstance(e, str)] if isinstance(entry.get("examples"), list) else []
        self._examples_prefilled = not examples and bool(self.suggested_examples)
        if self._examples_prefilled:
            examples = self.suggested_examples
        confidence = entry.get("confidence") if entry.get("confidence") in CONFIDENCES else "low"
        with VerticalScroll(id="edit-dialog"):
            title = "New registry entry" if self.feature_id is None else f"Feature {self.feature_id}"
            yield Static(title, id="edit-title")
            if self.feature_id is None:
                with Horizontal(classes="edit-row"):
                    yield Label("Feature id", classes="edit-label")
                    yield SafeInput(placeholder="e.g. 1234", id="edit-id", type="integer")
            with Horizontal(classes="edit-row"):
                yield Label("Name", classes="edit-label")
                yield SafeInput(editable(name), placeholder="e.g. geographic_locations", id="edit-name", select_on_focus=False)
            with Horizontal(classes="edit-row"):
                yield Label("Confidence", classes="edit-label")
                yield Select([(c, c) for c in CONFIDENCES], value=confidence, allow_blank=False, id="edit-confidence")
            yield Label("Description", classes="edit-caption")
            yield SafeTextArea(editable(description, multiline=True), id="edit-description", soft_wrap=True)
            caption = "Examples, one per line" + (" (pre-filled from its top contexts)" if self._examples_prefilled else "")
            yield Label(caption, classes="edit-caption")
            yield SafeTextArea("\n".join(editable(e) for e in examples), id="edit-examples", soft_wrap=True)
            with Horizontal(id="edit-buttons"):
                yield Button("Save (ctrl+s)", id="edit-save", variant="primary")
                yield Button("Cancel (esc)", id="edit-cancel")

    def on_mount(self) -> None:
        self.query_one("#edit-id" if self.feature_id is None else "#edit-name", Input).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "edit-save":
            self.action_save()
        else:
            self.action_cancel()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.focus_next()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_save(self) -> None:
        try:
            result = self._collect()
        except UserError as exc:
            self.notify(visible(exc.one_line()), severity="error", markup=False)
            return
        self.dismiss(result)

    def _collect(self) -> dict[str, Any]:
        entry = self.original
        out: dict[str, Any] = {}
        if self.feature_id is None:
            raw = self.query_one("#edit-id", Input).value.strip()
            if not raw.isdigit():
                raise UserError("Give the feature id as a whole number", "Type the id of the feature to name")
            fid = int(raw)
            if self.d_sae is not None and fid >= self.d_sae:
                raise UserError(f"Feature {fid} does not exist: this SAE has features 0 to {self.d_sae - 1}", "Type an id in that range")
            existing = self.named(fid) if self.named is not None else None
            if existing is not None:
                raise UserError(f"Feature {fid} is already in the registry as {existing}", "Press escape and edit that entry instead")
            out["id"] = fid
        original_name = entry.get("name") if isinstance(entry.get("name"), str) else None
        original_description = entry.get("description") if isinstance(entry.get("description"), str) else None
        out["name"] = restore(self.query_one("#edit-name", Input).value, original_name)
        out["description"] = restore(self.query_one("#edit-description", TextArea).text, original_description, multiline=True)
        out["confidence"] = self.query_one("#edit-confidence", Select).value
        originals = {editable(e): e for e in entry.get("examples") or [] if isinstance(e, str)} if isinstance(entry.get("examples"), list) else {}
        lines = self.query_one("#edit-examples", TextArea).text.split("\n")
        out["examples"] = [originals.get(line, line) for line in lines if line.strip()]
        if not out["name"].strip():
            raise UserError("A registry entry needs a name", "Type a short name, e.g. geographic_locations")
        return out


# -- saving, from any screen -------------------------------------------------------------------


def open_entry_editor(app: "SaetuiApp", feature_id: int | None, on_saved: Callable[[int], None] | None = None) -> None:
    """Show the edit dialog for a feature (None: a new entry) and save what it returns."""
    registry = getattr(app, "registry", None)
    if registry is None:
        app.notify("The feature registry is not open", severity="error")
        return
    if registry.read_only:
        app.notify(visible(registry.warning or "The registry is read-only"), severity="error", markup=False)
        return
    d_sae = app.engine.sae.d_sae if getattr(app.engine, "sae", None) is not None else None
    if feature_id is not None and d_sae is not None and not 0 <= feature_id < d_sae:
        app.notify(f"Feature {feature_id} does not exist: this SAE has features 0 to {d_sae - 1}", severity="error")
        return
    entry = registry.get(feature_id) if feature_id is not None else None

    def done(result: dict | None) -> None:
        if result is None:
            return
        fid = int(result.pop("id", feature_id))
        if save_entry(app, fid, result) and on_saved is not None:
            on_saved(fid)

    # Decoding a few contexts is quick tokenizer work (no MLX): done here, so the dialog
    # opens at once even while the engine's worker is busy with a long job.
    examples = top_context_examples(app.engine.session, feature_id) if feature_id is not None else []
    named = (lambda fid: registry.name(fid) or ("(unnamed)" if fid in registry else None)) if feature_id is None else None
    app.push_screen(EditEntryScreen(feature_id, entry, d_sae, examples, named), done)


def save_entry(app: "SaetuiApp", feature_id: int, fields: dict[str, Any]) -> bool:
    registry = app.registry
    try:
        registry.set(feature_id, fields)
        registry.save()
    except UserError as exc:
        registry.revert()
        app.notify(visible(exc.one_line()), severity="error", markup=False)
        return False
    app.notify(visible(f"Saved feature {feature_id}: {fields.get('name', '')}"), markup=False)
    broadcast_registry_changed(app)
    return True


def delete_entry(app: "SaetuiApp", feature_id: int) -> bool:
    registry = app.registry
    try:
        registry.delete(feature_id)
        registry.save()
    except UserError as exc:
        registry.revert()
        app.notify(visible(exc.one_line()), severity="error", markup=False)
        return False
    app.notify(f"Deleted feature {feature_id} from the registry")
    broadcast_registry_changed(app)
    return True


def broadcast_registry_changed(app: Any) -> None:
    """Tell every screen (of every mode, and any dialog) that names may have changed."""
    screens: list = []
    stacks = getattr(app, "_screen_stacks", None)
    if isinstance(stacks, dict):
        for stack in stacks.values():
            screens.extend(stack)
    else:  # pragma: no cover - a Textual without per-mode stacks
        screens.extend(app.screen_stack)
    for screen in screens:
        screen.post_message(RegistryChanged())
