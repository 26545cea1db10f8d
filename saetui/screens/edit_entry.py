"""The registry's dialogs: edit (or add) an entry, and confirm a delete.

They only ask: `EditEntryScreen` returns the fields the user typed (an `EditedEntry`) and
`ConfirmDeleteScreen` returns yes or no. The app opens them when a screen posts
`AddRegistryEntry`, `EditRegistryEntry` or `DeleteRegistryEntry`, saves the result and
announces the change (`SaetuiApp.registry_changed_signal`).

Registry text is data, and so is text from a dataset: editing widgets show control
characters as visible escapes (`SafeInput`, `SafeTextArea`), and a field the user did
not touch is saved exactly as it was, escapes and all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from rich.text import Text
from textual import events
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static, TextArea

from ..engine.errors import UserError
from ..engine.registry import CONFIDENCES
from ..engine.tokens import REPLACEMENT
from ..ui.safe_text import literal, visible

if TYPE_CHECKING:
    from ..engine.session import Session

# Examples pre-filled from the feature index's top contexts: short excerpts around the
# peak token, like the guide's examples ("Paris, France").
PREFILL_EXAMPLES = 5
EXAMPLE_CHARS = 60


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

    def on_paste(self, event: events.Paste) -> None:
        # Runs before Input's own paste handler, which then inserts the escaped text.
        event.text = editable(event.text.splitlines()[0] if event.text else "")


class SafeTextArea(TextArea):
    """A TextArea that never receives raw control characters, even from a paste."""

    def on_paste(self, event: events.Paste) -> None:
        # Runs before TextArea's own paste handler, which then inserts the escaped text.
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
        return index.density(feature_id)
    except UserError:
        return None, False


def top_context_examples(session: "Session | None", feature_id: int, limit: int = PREFILL_EXAMPLES) -> list[str]:
    """The feature's top contexts as clean one-line excerpts around their peak token
    (whole words, no special tokens), from the open index (tokenizer only, no MLX)."""
    if session is None or session.index is None:
        return []
    index = session.index
    try:
        stats = index.feature(feature_id)
    except UserError:
        return []
    out: list[str] = []
    for example in stats.top[:limit]:
        ids = [int(t) for t in example.window_tokens.tolist()]
        # A window that starts or ends inside its context may cut a word there.
        cut_right = example.window_start + len(ids) < index.context_len
        excerpt = clean_excerpt(session.tokenizer, ids, example.max_index, cut_left=example.window_start > index.first_position, cut_right=cut_right)
        if excerpt and excerpt not in out:
            out.append(excerpt)
    return out


def special_token_ids(tokenizer: Any) -> set[int]:
    """The tokenizer's special tokens (BOS, EOS, padding...): never part of an example."""
    ids: set[int] = set()
    for name in ("all_special_ids",):
        try:
            ids.update(int(i) for i in getattr(tokenizer, name, None) or [])
        except (TypeError, ValueError):
            pass
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            ids.add(value)
    eos = getattr(tokenizer, "eos_token_ids", None)
    if isinstance(eos, (set, list, tuple)):
        ids.update(int(i) for i in eos if isinstance(i, int))
    return ids


def _starts_word(tokenizer: Any, token_id: int) -> bool:
    """Whether a token begins a word (a leading space marker, or punctuation)."""
    try:
        piece = tokenizer.convert_ids_to_tokens(int(token_id))
    except Exception:  # noqa: BLE001 - a tokenizer without it: assume the word may be cut
        return False
    if not isinstance(piece, str) or not piece:
        return False
    return piece[0] in "\u2581\u0120 \t\n" or not piece[0].isalnum()


def _decode(tokenizer: Any, ids: list[int]) -> str:
    try:
        return tokenizer.decode(ids, skip_special_tokens=False)
    except TypeError:
        return tokenizer.decode(ids)


def _drop_first_word(text: str) -> str:
    rest = text.lstrip(" ")
    cut = rest.find(" ")
    return rest[cut:] if cut >= 0 else ""


def _drop_last_word(text: str) -> str:
    rest = text.rstrip(" ")
    cut = rest.rfind(" ")
    return rest[: cut + 1] if cut >= 0 else ""


def clean_excerpt(tokenizer: Any, ids: list[int], peak: int, max_chars: int = EXAMPLE_CHARS, cut_left: bool = True, cut_right: bool = True) -> str:
    """The text around token `peak` of `ids` as an example a person would write: the
    document it is in only (special tokens end it), whole words, whitespace as single
    spaces, at most `max_chars` (words dropped from the longer side first)."""
    if not 0 <= peak < len(ids):
        return ""
    special = special_token_ids(tokenizer)
    if ids[peak] in special:
        # Fires on a special token: the text that follows it (else precedes it) shows where.
        after = peak + 1
        if after < len(ids) and ids[after] not in special:
            peak = after
        elif peak > 0 and ids[peak - 1] not in special:
            peak = peak - 1
        else:
            return ""
    lo = peak
    while lo > 0 and ids[lo - 1] not in special:
        lo -= 1
    hi = peak + 1
    while hi < len(ids) and ids[hi] not in special:
        hi += 1
    # Decoded as runs (a character split over two tokens decodes whole).
    before = _decode(tokenizer, ids[lo:peak]).rstrip(REPLACEMENT)
    through = _decode(tokenizer, ids[lo : peak + 1])
    full = _decode(tokenizer, ids[lo:hi])
    if through.startswith(before) and full.startswith(through):
        left, mid, right = before, through[len(before) :], full[len(through) :]
    else:  # a decoder that rewrites text: one token at a time
        left, mid, right = (_decode(tokenizer, ids[a:b]) for a, b in ((lo, peak), (peak, peak + 1), (peak + 1, hi)))
    left, right = left.lstrip(REPLACEMENT), right.rstrip(REPLACEMENT)
    squash = lambda t: re.sub(r"\s+", " ", t)  # noqa: E731
    left, mid, right = squash(left), squash(mid), squash(right)
    # A word cut by the window's edge (not by a document boundary) is left out.
    if lo == 0 and cut_left and left and not _starts_word(tokenizer, ids[0]) and " " in left.strip(" "):
        left = _drop_first_word(left)
    # (One ending in punctuation is whole.)
    if hi == len(ids) and cut_right and right.strip(" ")[-1:].isalnum() and " " in right.strip(" "):
        right = _drop_last_word(right)
    while len(left) + len(mid) + len(right) > max_chars and (left.strip() or right.strip()):
        if len(left) >= len(right):
            left = _drop_first_word(left)
        else:
            right = _drop_last_word(right)
    return squash(left + mid + right).strip()


# -- notes of interventions (the Steer screen's experiments) ----------------------------------------

# Between an intervention's spec and what was observed, on one line of the dialog.
NOTE_SEPARATOR = "—"


def intervention_lines(entry: dict) -> list[str]:
    """The entry's `interventions` notes as the dialog's lines ("12:add:20 — cities appear")."""
    notes = entry.get("interventions")
    if not isinstance(notes, list):
        return []
    lines = []
    for note in notes:
        if isinstance(note, dict) and isinstance(note.get("spec"), str):
            effect = note.get("effect") if isinstance(note.get("effect"), str) else ""
            lines.append(f"{note['spec']} {NOTE_SEPARATOR} {effect}".rstrip(f" {NOTE_SEPARATOR}"))
    return lines


def parse_intervention_notes(text: str, d_sae: int | None) -> list[dict[str, str]]:
    """Lines "ID:MODE[:VALUE] — effect" as registry notes [{"spec", "effect"}]; a malformed
    spec is a UserError naming the line (the same rules as `saetui steer --feature`)."""
    from ..engine.intervene import parse_intervention

    notes = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        spec, _, effect = line.partition(NOTE_SEPARATOR)
        if not _:
            spec, _, effect = line.partition(" - ")
        try:
            parsed = parse_intervention(spec.strip(), d_sae)
        except UserError as exc:
            raise UserError(f"Interventions, line {number}: {exc.problem}", exc.fix) from None
        notes.append({"spec": parsed.spec, "effect": effect.strip()})
    return notes


# -- the dialog ----------------------------------------------------------------------------------


@dataclass
class EditedEntry:
    """What the edit dialog returns: the feature and the fields to save for it."""

    feature_id: int
    fields: dict[str, Any]


class EditEntryScreen(ModalScreen[EditedEntry | None]):
    """Name, description, confidence and examples of one feature; returns them, or None.

    With `feature_id=None` (adding), it asks for the feature id too.
    """

    CSS_PATH = "registry.tcss"
    BINDINGS = [
        Binding("ctrl+s", "save", "Save"),
        Binding("escape", "cancel", "Cancel"),
        # Why priority: the app hands each key to the widget focused when the key *arrives*,
        # and a plain tab binding moves focus only once the tab has gone through the old
        # field's queue, so keys typed in the same burst went to the old field (or, in the
        # integer id box, were dropped). A priority binding runs as the key arrives.
        Binding("tab", "next_field", "Next field", show=False, priority=True),
        Binding("shift+tab", "previous_field", "Previous field", show=False, priority=True),
        Binding("enter", "submit_field", "Next field", show=False, priority=True),
    ]

    def __init__(
        self,
        feature_id: int | None,
        entry: dict[str, Any] | None,
        d_sae: int | None = None,
        suggested_examples: list[str] | None = None,
        named: Callable[[int], str | None] | None = None,
        suggested_interventions: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.feature_id = feature_id
        self.original = entry or {}
        self.d_sae = d_sae
        self.suggested_examples = suggested_examples or []
        # The Steer screen's interventions on this feature: offered as notes to complete.
        self.suggested_interventions = suggested_interventions or []
        # When adding: the registry's name for an id, so an existing entry is not overwritten.
        self.named = named

    def compose(self) -> ComposeResult:
        entry = self.original
        raw_name, raw_description = entry.get("name"), entry.get("description")
        name = raw_name if isinstance(raw_name, str) else ""
        description = raw_description if isinstance(raw_description, str) else ""
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
            yield Label(f"Interventions tried, one per line: ID:MODE[:VALUE] {NOTE_SEPARATOR} what you saw", classes="edit-caption")
            notes = intervention_lines(entry) or [f"{spec} {NOTE_SEPARATOR} " for spec in self.suggested_interventions]
            yield SafeTextArea("\n".join(editable(line) for line in notes), id="edit-interventions", soft_wrap=True)
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

    def _dropdown_open(self) -> bool:
        return any(select.expanded for select in self.query(Select))

    def action_next_field(self) -> None:
        if self._dropdown_open():
            raise SkipAction()  # the confidence list's own keys
        self.focus_next()

    def action_previous_field(self) -> None:
        if self._dropdown_open():
            raise SkipAction()
        self.focus_previous()

    def action_submit_field(self) -> None:
        # Enter in a one-line field moves on at once (as tab does); elsewhere (buttons, the
        # confidence list, the text areas' new lines) it does what it does there.
        if not isinstance(self.focused, Input) or self._dropdown_open():
            raise SkipAction()
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

    def _collect(self) -> EditedEntry:
        entry = self.original
        out: dict[str, Any] = {}
        fid = self.feature_id
        if fid is None:
            raw = self.query_one("#edit-id", Input).value.strip()
            if not raw.isdigit():
                raise UserError("Give the feature id as a whole number", "Type the id of the feature to name")
            fid = int(raw)
            if self.d_sae is not None and fid >= self.d_sae:
                raise UserError(f"Feature {fid} does not exist: this SAE has features 0 to {self.d_sae - 1}", "Type an id in that range")
            existing = self.named(fid) if self.named is not None else None
            if existing is not None:
                raise UserError(f"Feature {fid} is already in the registry as {existing}", "Press escape and edit that entry instead")
        original_name = entry.get("name") if isinstance(entry.get("name"), str) else None
        original_description = entry.get("description") if isinstance(entry.get("description"), str) else None
        out["name"] = restore(self.query_one("#edit-name", Input).value, original_name)
        out["description"] = restore(self.query_one("#edit-description", TextArea).text, original_description, multiline=True)
        out["confidence"] = self.query_one("#edit-confidence", Select).value
        originals = {editable(e): e for e in entry.get("examples") or [] if isinstance(e, str)} if isinstance(entry.get("examples"), list) else {}
        lines = self.query_one("#edit-examples", TextArea).text.split("\n")
        out["examples"] = [originals.get(line, line) for line in lines if line.strip()]
        notes = parse_intervention_notes(self.query_one("#edit-interventions", TextArea).text, self.d_sae)
        if notes or "interventions" in entry:
            out["interventions"] = notes
        if not out["name"].strip():
            raise UserError("A registry entry needs a name", "Type a short name, e.g. geographic_locations")
        return EditedEntry(fid, out)


class ConfirmDeleteScreen(ModalScreen[bool]):
    """y deletes, n or escape keeps."""

    CSS_PATH = "registry.tcss"
    BINDINGS = [
        Binding("y", "answer(True)", "Delete"),
        Binding("n,escape", "answer(False)", "Keep"),
    ]

    def __init__(self, feature_id: int, name: str | None) -> None:
        super().__init__()
        self.feature_id = feature_id
        self.feature_name = name

    def compose(self) -> ComposeResult:
        question = Text(f"Delete feature {self.feature_id}")
        if self.feature_name:
            question.append(" (")
            question.append_text(literal(self.feature_name))
            question.append(")")
        question.append(" from the registry?\n\ny: delete    n / escape: keep")
        with Vertical(id="confirm-dialog", classes="registry-dialog"):
            yield Static(question)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Delete (y)", id="confirm-yes", variant="error")
                yield Button("Keep (n)", id="confirm-no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
