"""Incremental UTF-8 decoding of text that arrives in byte pieces split anywhere.

A piece may end in the middle of a multi-byte character; the decoder keeps the partial bytes
for the next piece. Errors name the byte offset within the whole stream, so a client can find
the bad byte even when it sent the text one token at a time.

`speakable` then turns control characters (C0/C1, e.g. NUL or terminal escapes) into spaces
and drops invisible format characters (bidi overrides and isolates, zero-width joiners,
BOM): the voices cannot say them, and a NUL makes piper and espeak-ng raise. Right-to-left
script itself is kept and spoken as well as the voice can.
"""

from __future__ import annotations

import codecs
import re
import unicodedata

from synctalk.rpc.errors import RpcError, exhausted, invalid

_KEPT_CONTROLS = "\t\n\r"  # whitespace the sentence splitter uses


def _unspeakable(char: str) -> str:
    if char in _KEPT_CONTROLS:
        return char
    return " " if unicodedata.category(char) == "Cc" else ""


_UNSPEAKABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u00ad\u061c\u200b-\u200f\u202a-\u202e"
                          r"\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]")


def speakable(text: str) -> str:
    """`text` with control characters as spaces and invisible format characters removed."""
    return _UNSPEAKABLE.sub(lambda m: _unspeakable(m.group()), text)


class StreamingText:
    """Decodes text pieces, counts characters against a limit, remembers whether any was non-blank."""

    def __init__(self, max_chars: int, field: str = "text") -> None:
        self.max_chars = max_chars
        self.field = field
        self.chars = 0
        self.bytes_fed = 0
        self.has_content = False
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")

    def feed(self, piece: bytes) -> str:
        """The newly complete characters of `piece`; raises INVALID_ARGUMENT / RESOURCE_EXHAUSTED."""
        text = self._decode(piece, final=False)
        self.bytes_fed += len(piece)
        return self._count(text)

    def finish(self) -> str:
        """Whatever is left at the end of the stream; a dangling partial character is an error."""
        return self._count(self._decode(b"", final=True))

    def _decode(self, piece: bytes, final: bool) -> str:
        pending = len(self._decoder.getstate()[0])
        try:
            return self._decoder.decode(piece, final)
        except UnicodeDecodeError as err:
            raise self._error(self.bytes_fed - pending + err.start) from None

    def _error(self, offset: int) -> RpcError:
        return invalid(self.field, f"not valid UTF-8 at byte {offset}")

    def _count(self, text: str) -> str:
        self.chars += len(text)
        if self.chars > self.max_chars:
            raise exhausted(f"{self.field}: more than {self.max_chars} characters in one stream")
        if not self.has_content and text and not text.isspace():
            self.has_content = True
        return text
