"""Token id ⇄ the raw bytes it stands for: what the OpenAI logprobs `bytes` field carries.

A token's decoded text is not enough to find it again: a token holding half of a multi-byte character decodes to
"\ufffd", and several ids can decode alike. Its bytes are exact. Byte-level BPE vocabularies (GPT-2, Llama 3, Qwen,
SmolLM2) spell each byte as one printable character (`bytes_to_unicode`); SentencePiece vocabularies spell a space
as "▁" and raw bytes as "<0xNN>"; added and special tokens are their own text.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    # GPT-2's reversible byte ↔ printable character table.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


_SPECIAL: dict[int, set[str]] = {}


def token_bytes(tokenizer, token_id: int) -> bytes:
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    if piece is None:
        return b""
    special = _SPECIAL.get(id(tokenizer))
    if special is None:
        special = _SPECIAL[id(tokenizer)] = set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab())
    if piece in special:
        return piece.encode("utf-8")
    if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:  # SentencePiece byte fallback
        return bytes([int(piece[3:5], 16)])
    decoder = _byte_decoder()
    if "▁" not in piece and all(c in decoder for c in piece):
        return bytes(decoder[c] for c in piece)
    return piece.replace("▁", " ").encode("utf-8")


_BY_BYTES: dict[int, dict[bytes, int]] = {}


def ids_from_bytes(tokenizer, pieces: list[bytes]) -> list[int] | None:
    """The ids whose bytes are `pieces`, one each; None when a piece is no single token of this vocabulary."""
    table = _BY_BYTES.get(id(tokenizer))
    if table is None:
        table = {}
        special = set(tokenizer.all_special_ids)
        for token_id in sorted(tokenizer.get_vocab().values(), key=lambda t: (t in special, t)):
            table.setdefault(token_bytes(tokenizer, token_id), token_id)  # ordinary tokens before special ones
        _BY_BYTES[id(tokenizer)] = table
    ids = [table.get(bytes(piece)) for piece in pieces]
    return None if any(i is None for i in ids) else ids
