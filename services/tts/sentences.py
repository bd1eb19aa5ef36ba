"""Incremental sentence splitting: speak each sentence as soon as its end is certain.

A sentence ends at `.`, `!` or `?` (optionally followed by closing quotes or brackets) once the
next character is whitespace, or at a newline. The whitespace requirement keeps numbers like
`3.5` whole even when `3.` and `5` arrive in different pieces; a short list of abbreviations
(`Mr.`, `Dr.`, `e.g.`, ...) and single-letter initials do not end a sentence. A sentence that
grows past `max_chars` without an end is cut at its last space so audio keeps flowing.
"""

from __future__ import annotations

import re

ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "fig", "approx", "inc",
        "ltd", "co", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov",
        "dec", "gen", "col", "lt", "sgt", "capt", "rev",
    }
)
_CLOSERS = "\"'”’)]"
_OPENERS = "(\"'“‘"
_BOUNDARY = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s)|\n")
_TRAILING_TERMINATORS = re.compile(r"[.!?\"'”’)\]]*$")
_WORD_BEFORE = re.compile(r"(\S+)$")


def _is_abbreviation(text_before_dot: str) -> bool:
    """True when the `.` after this text belongs to an abbreviation or an initial."""
    match = _WORD_BEFORE.search(text_before_dot)
    if match is None:
        return False
    word = match.group(1).lstrip(_OPENERS).lower()
    initials = all(len(part) == 1 and part.isalpha() for part in word.split("."))
    return initials or word in ABBREVIATIONS


class SentenceSplitter:
    """Feed text pieces; get back the sentences they complete, in order."""

    def __init__(self, max_chars: int = 400) -> None:
        self.max_chars = max_chars
        self._buffer = ""
        self._scan_from = 0

    @property
    def pending(self) -> str:
        return self._buffer

    def feed(self, text: str) -> list[str]:
        self._buffer += text
        sentences: list[str] = []
        start = 0
        for match in _BOUNDARY.finditer(self._buffer, self._scan_from):
            ends_with_dot = match.group().rstrip(_CLOSERS) == "."
            if ends_with_dot and _is_abbreviation(self._buffer[start : match.start()]):
                continue
            sentence = self._buffer[start : match.end()].strip()
            if sentence:
                sentences.append(sentence)
            start = match.end()
        self._buffer = self._buffer[start:]
        sentences.extend(self._cut_overlong())
        tail = _TRAILING_TERMINATORS.search(self._buffer)
        self._scan_from = tail.start() if tail else len(self._buffer)
        return sentences

    def flush(self) -> list[str]:
        """Everything pending as one last sentence (none if it is blank)."""
        rest = self._buffer.strip()
        self._buffer = ""
        self._scan_from = 0
        return [rest] if rest else []

    def _cut_overlong(self) -> list[str]:
        cut: list[str] = []
        while len(self._buffer) > self.max_chars:
            space = self._buffer.rfind(" ", 0, self.max_chars)
            at = space if space > 0 else self.max_chars
            head = self._buffer[:at].strip()
            if head:
                cut.append(head)
            self._buffer = self._buffer[at:]
        return cut
