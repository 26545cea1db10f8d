"""Token ids to display strings, one per token, for any mlx-lm tokenizer.

Each token's string is the text it adds to the decoded sequence, so the strings of a
context join up to the decoded context. A token that ends in the middle of a UTF-8
character (byte-level BPE splits emoji and CJK across tokens) shows its bytes as
`\\xNN` escapes; the token that completes the character shows the character.
"""

from __future__ import annotations

from typing import Any, Sequence

REPLACEMENT = "\ufffd"


def token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    ids = [int(i) for i in ids]
    out: list[str] = []
    stable = ""  # decoded text of the tokens so far, minus an unfinished character
    for i in range(len(ids)):
        text = _decode(tokenizer, ids[: i + 1])
        if text.startswith(stable):
            piece = text[len(stable) :]
        else:  # a decoder that rewrites earlier text (rare): fall back to this token alone
            piece = _decode(tokenizer, ids[i : i + 1])
        if piece.endswith(REPLACEMENT):
            out.append(_byte_escape(tokenizer, ids[i]) or piece)
            stable = text.rstrip(REPLACEMENT)
        else:
            out.append(piece)
            stable = text
    return out


def token_string(tokenizer: Any, token_id: int) -> str:
    """One token on its own (for lists of output tokens)."""
    text = _decode(tokenizer, [int(token_id)])
    if REPLACEMENT in text:
        return _byte_escape(tokenizer, int(token_id)) or text
    return text


def _decode(tokenizer: Any, ids: list[int]) -> str:
    try:
        return tokenizer.decode(ids, skip_special_tokens=False)
    except TypeError:
        return tokenizer.decode(ids)


_BYTE_DECODER: dict[str, int] | None = None


def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's printable-unicode-to-byte table, inverted."""
    global _BYTE_DECODER
    if _BYTE_DECODER is None:
        bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
        cs = bs[:]
        n = 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        _BYTE_DECODER = {chr(c): b for b, c in zip(bs, cs)}
    return _BYTE_DECODER


def _byte_escape(tokenizer: Any, token_id: int) -> str | None:
    """`\\xNN` escapes for a token that is bytes rather than whole characters."""
    try:
        piece = tokenizer.convert_ids_to_tokens(int(token_id))
    except Exception:
        return None
    if not isinstance(piece, str):
        return None
    if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:  # SentencePiece byte fallback
        return "\\x" + piece[3:5].lower()
    table = _byte_level_decoder()
    if all(ch in table for ch in piece):
        raw = bytes(table[ch] for ch in piece)
        text = raw.decode("utf-8", errors="ignore")
        rest = raw[len(text.encode("utf-8")) :] if raw.startswith(text.encode("utf-8")) else raw
        return text + "".join(f"\\x{b:02x}" for b in rest)
    return None
