"""Where an inline hint goes in a message's text, and the spaces around it.

Verifiers find the wrong characters; the hint goes right before them. Tokenizers disagree about the space in front
of a word: most BPE tokenizers glue it to the word (" Lyon"), while SmolLM2 splits numbers into digits and keeps
" " as a token of its own. A hint anchored at the error's first character would land after the space in one case
and before it in the other. So the hint is anchored at the start of the spaces before the error and written as
" (Hint: ...)", a leading space and none after: the trajectory's own space then follows the hint, and the spliced
text reads "is (Hint: ...) Lyon" / "= (Hint: ...) 32" whichever way the tokenizer cuts.
"""

from __future__ import annotations


def inline_hint(content: str, error_start: int, body: str) -> tuple[int, str]:
    """(hint_char, hint text) for a hint saying `body` before the error that starts at `error_start`."""
    hint_char = error_start
    while hint_char > 0 and content[hint_char - 1] in " \t":
        hint_char -= 1
    text = f"(Hint: {body})"
    if hint_char < error_start:
        return hint_char, " " + text
    # No space before the error ("=32", or the start of a line): the hint brings its own spaces.
    at_line_start = hint_char == 0 or content[hint_char - 1] == "\n"
    return hint_char, ("" if at_line_start else " ") + text + " "
