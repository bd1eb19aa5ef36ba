"""Incremental UTF-8 decoding and sentence splitting of text that arrives in arbitrary pieces."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.tts.sentences import SentenceSplitter
from services.tts.utf8 import StreamingText
from synctalk.rpc.errors import RpcError

TEXT = (
    "Hello Mr. Smith, pi is about 3.14 today! Is it? I moved to the U.S. in May.\n"
    "A new line starts here \"quoted.\" And e.g. this one. Tail without an end"
)
EXPECTED = [
    "Hello Mr. Smith, pi is about 3.14 today!",
    "Is it?",
    "I moved to the U.S. in May.",
    "A new line starts here \"quoted.\"",
    "And e.g. this one.",
    "Tail without an end",
]


def split_in_pieces(text: str, cuts: list[int]) -> list[str]:
    sentences: list[str] = []
    splitter = SentenceSplitter()
    bounds = [0, *sorted({c % (len(text) + 1) for c in cuts}), len(text)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        sentences += splitter.feed(text[a:b])
    return sentences + splitter.flush()


def test_whole_text_splits_at_sentence_ends_only() -> None:
    assert split_in_pieces(TEXT, []) == EXPECTED


def test_one_character_at_a_time_gives_the_same_sentences() -> None:
    assert split_in_pieces(TEXT, list(range(len(TEXT)))) == EXPECTED


def test_sentence_is_released_as_soon_as_whitespace_follows_its_end() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("The value is 3.") == []
    assert splitter.feed("5 now. Next") == ["The value is 3.5 now."]
    assert splitter.pending == " Next"


def test_overlong_text_without_an_end_is_cut_at_a_space() -> None:
    splitter = SentenceSplitter(max_chars=20)
    parts = splitter.feed("one two three four five six seven eight") + splitter.flush()
    assert all(len(p) <= 20 for p in parts)
    assert " ".join(parts) == "one two three four five six seven eight"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(TEXT)), max_size=12))
def test_any_split_of_the_text_gives_the_same_sentences(cuts: list[int]) -> None:
    assert split_in_pieces(TEXT, cuts) == EXPECTED


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40), st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_utf8_split_mid_character_decodes_like_the_whole(text: str, cuts: list[int]) -> None:
    data = text.encode("utf-8")
    bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    decoder = StreamingText(max_chars=1000)
    decoded = "".join(decoder.feed(data[a:b]) for a, b in zip(bounds, bounds[1:], strict=False))
    assert decoded + decoder.finish() == text
    assert decoder.has_content == (text.strip() != "")


@pytest.mark.parametrize(
    ("pieces", "offset"),
    [([b"ab\xffcd"], 2), ([b"abc", b"\xc3("], 3), ([b"ok ", b"\xe2\x82"], 3)],
)
def test_invalid_utf8_names_the_byte_offset_in_the_stream(pieces: list[bytes], offset: int) -> None:
    decoder = StreamingText(max_chars=1000)
    with pytest.raises(RpcError) as caught:
        for piece in pieces:
            decoder.feed(piece)
        decoder.finish()
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message == f"text: not valid UTF-8 at byte {offset}"


def test_text_over_the_limit_is_resource_exhausted() -> None:
    decoder = StreamingText(max_chars=10)
    decoder.feed("é".encode() * 10)
    with pytest.raises(RpcError) as caught:
        decoder.feed(b"x")
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
