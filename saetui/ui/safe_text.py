"""Text from datasets and users is data: show it literally, never as markup or raw control codes.

`visible()` turns every control character into a visible escape (newlines and tabs into
arrows when shown inline), and `literal()` wraps the result in a Rich `Text`, which
Textual never parses as markup. Widgets showing data must be given `literal(...)`,
never a plain `str` (Static, Label and DataTable parse plain strings as markup).
"""

from __future__ import annotations

import unicodedata

from rich.style import Style
from rich.text import Text

# Characters that reorder or hide text on screen (bidi controls, zero-width joiners are fine).
_BIDI = {0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069, 0x200E, 0x200F}


def visible(text: str, inline: bool = True) -> str:
    """`text` with control characters as visible escapes.

    inline=True (tokens, table cells): newline -> '↵', tab -> '⇥'. inline=False keeps
    newlines (multi-line descriptions) and turns tabs into spaces.
    """
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if ch == "\n":
            out.append("↵" if inline else "\n")
        elif ch == "\t":
            out.append("⇥" if inline else "    ")
        elif ch == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0x80 <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif code in _BIDI or unicodedata.category(ch) in ("Cs", "Co"):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def literal(text: str, style: str | Style = "", inline: bool = True) -> Text:
    """A Rich Text showing `text` exactly (no markup parsed, no raw control codes)."""
    return Text(visible(str(text), inline=inline), style=style, no_wrap=False)
