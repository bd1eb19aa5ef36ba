"""How long a text may take to say, so text that cannot fit a stream is refused up front.

A stream is capped at `services.max_stream_seconds` (the renderer refuses frames past it).
Before any service is called, `check_speech_length` refuses (422) a text whose speech would
run past that cap by a conservative estimate: a digit counts `SECONDS_PER_DIGIT` (it is read
out as a word, and a long number as many words) and every other character
`1 / MIN_CHARS_PER_SECOND` (slower than any shipped voice at speed 1, which speak 13-16
characters a second). Because no estimate from text alone holds for every voice, the
orchestrator also cuts a text utterance whose speech reaches the cap
(`speech_limit_error`), ending it with the same message instead of a "busy" status.
"""

from __future__ import annotations

from services.edge.errors import EdgeError, bad_input

MIN_CHARS_PER_SECOND = 10.0
SECONDS_PER_DIGIT = 0.5


def speech_seconds_bound(text: str) -> float:
    """A conservative estimate of how long `text` takes to say, in seconds."""
    digits = sum(ch.isdigit() for ch in text)
    return digits * SECONDS_PER_DIGIT + (len(text) - digits) / MIN_CHARS_PER_SECOND


def speech_limit_error(max_seconds: float) -> EdgeError:
    return bad_input(f"text: its speech runs past the stream limit of {max_seconds:g} s "
                     "(services.max_stream_seconds); split it into shorter requests")


def check_speech_length(text: str, max_seconds: float) -> None:
    estimate = speech_seconds_bound(text)
    if estimate > max_seconds:
        raise bad_input(f"text: about {estimate:.0f} s of speech, past the stream limit of "
                        f"{max_seconds:g} s (services.max_stream_seconds); split it into "
                        "shorter requests")
