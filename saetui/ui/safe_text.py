"""Text from datasets, files and users is data: show it literally, never as markup or raw codes.

The one escaping rule, `needs_escape()`: every character that is not plain visible text
is escaped: C0/C1 controls and DEL (terminal escapes, CSI U+009B), every format
character (bidi embeddings and isolates U+202A-202E/U+2066-2069, marks U+200E/U+200F/
U+061C, zero-width space U+200B, byte order mark U+FEFF, soft hyphen, tags...), the
line and paragraph separators U+2028/U+2029, surrogates and private-use characters.
Only the zero-width joiner and non-joiner (U+200C/U+200D) pass: scripts such as
Persian and emoji sequences need them, and they neither move text nor take a cell.

`visible()` applies the rule for the screen (newlines and tabs as arrows when shown
inline), `literal()` wraps the result in a Rich `Text`, which Textual never parses as
markup, and `dumps_json_safe()` applies it to JSON output (as \\uXXXX escapes, so the
JSON still parses to the same values). Widgets showing data must be given
`literal(...)`, never a plain `str` (Static, Label and DataTable parse plain strings as
markup).
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from rich.style import Style
from rich.text import Text

# Zero-width (non-)joiner: format characters that are part of ordinary text.
_JOINERS = {0x200C, 0x200D}
_ESCAPED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}


def needs_escape(ch: str) -> bool:
    """True for a character that must never reach the terminal (or a JSON string) raw."""
    code = ord(ch)
    if code < 0x20 or 0x7F <= code < 0xA0:
        return True
    if code < 0xA0:
        return False
    return unicodedata.category(ch) in _ESCAPED_CATEGORIES and code not in _JOINERS


def _escape(code: int) -> str:
    if code < 0x100:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(text: str, inline: bool = True) -> str:
    """`text` with every character `needs_escape()` names as a visible escape.

    inline=True (tokens, table cells, one-line messages): newline -> '↵', tab -> '⇥'.
    inline=False keeps newlines (multi-line descriptions) and turns tabs into spaces.
    """
    out: list[str] = []
    for ch in str(text):
        if ch == "\n":
            out.append("↵" if inline else "\n")
        elif ch == "\t":
            out.append("⇥" if inline else "    ")
        elif ch == "\r":
            out.append("\\r")
        elif needs_escape(ch):
            out.append(_escape(ord(ch)))
        else:
            out.append(ch)
    return "".join(out)


# Candidates in json.dumps(ensure_ascii=False) output: anything outside printable ASCII
# (json already escapes C0 controls); `needs_escape` decides.
_NON_ASCII = re.compile("[^\n\x20-\x7e]")  # newlines: the layout of indent=


def _json_escape(match: re.Match[str]) -> str:
    ch = match.group()
    if not needs_escape(ch):
        return ch
    code = ord(ch)
    if code > 0xFFFF:  # JSON spells these as a surrogate pair
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def dumps_json_safe(obj: Any, **kwargs: Any) -> str:
    """`json.dumps(obj, ensure_ascii=False, **kwargs)` with every control, format, bidi and
    separator character written as a \\uXXXX escape: the same JSON values, nothing raw.

    Every `--json` printer uses this; so do saetui's JSON files (reports, the registry).
    """
    kwargs.setdefault("ensure_ascii", False)
    text = json.dumps(obj, **kwargs)
    return _NON_ASCII.sub(_json_escape, text)


def literal(text: str, style: str | Style = "", inline: bool = True) -> Text:
    """A Rich Text showing `text` exactly (no markup parsed, no raw control codes)."""
    return Text(visible(str(text), inline=inline), style=style, no_wrap=False)
