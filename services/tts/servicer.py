"""lipsync.v1.TextToSpeech: text pieces in, 16 kHz audio out sentence by sentence.

Text is decoded and split as it arrives; each complete sentence is synthesized in a worker
thread (so concurrent streams and the event loop are never blocked) and its chunks are sent
before the next piece is read. A cancelled or expired call stops after the sentence in flight.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from concurrent.futures import Executor

import grpc

from services.tts import metrics
from services.tts.sentences import SentenceSplitter
from services.tts.synthesizer import SynthesisOptions, Synthesizer
from services.tts.utf8 import StreamingText, speakable
from services.tts.voices import Voice, VoiceCatalog
from synctalk.config import TTSConfig
from synctalk.log import get_logger
from synctalk.rpc.errors import invalid, rejects_bad_streams
from synctalk.rpc.gen.lipsync.v1 import common_pb2, tts_pb2, tts_pb2_grpc

log = get_logger("services.tts")


def voice_message(voice: Voice, is_default: bool) -> tts_pb2.Voice:
    return tts_pb2.Voice(id=voice.id, engine=voice.engine, language=voice.language,
                         native_sample_rate=voice.native_sample_rate, is_default=is_default)


class TextToSpeechServicer(tts_pb2_grpc.TextToSpeechServicer):
    def __init__(self, catalog: VoiceCatalog, tts: TTSConfig, executor: Executor) -> None:
        self.catalog = catalog
        self.tts = tts
        self.executor = executor

    def open_stream(self, first: tts_pb2.SynthesizeRequest | None) -> Synthesizer:
        """Validate the first message (it must be config) and set up the stream's synthesizer."""
        if first is None or first.WhichOneof("payload") != "config":
            raise invalid("config", "the first message must be config")
        options = SynthesisOptions.from_config(first.config, self.tts.output_sample_rate)
        voice = self.catalog.get(first.config.voice)
        log.info("synthesize.start", voice=voice.id, engine=voice.engine, speed=options.speed,
                 deterministic=options.deterministic, sample_rate=options.sample_rate)
        return Synthesizer(voice, options)

    @rejects_bad_streams("synthesize.rejected", log)
    async def Synthesize(self, request_iterator: AsyncIterator[tts_pb2.SynthesizeRequest],
                         context: grpc.aio.ServicerContext) -> AsyncIterator[common_pb2.AudioChunk]:
        requests = aiter(request_iterator)
        synthesizer = self.open_stream(await anext(requests, None))
        text = StreamingText(self.tts.max_text_chars)
        splitter = SentenceSplitter()
        first_audio = metrics.FirstAudioClock(synthesizer.voice.engine)
        async for request in requests:
            if request.WhichOneof("payload") == "text":
                first_audio.text_arrived()
            for sentence in self._sentences(request, text, splitter):
                chunks = await self._speak(synthesizer, sentence)
                first_audio.audio_ready()
                for chunk in chunks:
                    yield chunk
        rest = splitter.feed(speakable(text.finish())) + splitter.flush()
        if not rest and synthesizer.sentence_index == 0:  # blank once made speakable
            raise invalid("text", "no text to speak (the stream ended with no non-blank text)")
        for sentence in rest:
            chunks = await self._speak(synthesizer, sentence)
            first_audio.audio_ready()
            for chunk in chunks:
                yield chunk
        log.info("synthesize.end", sentences=synthesizer.sentence_index, chars=text.chars,
                 samples=synthesizer.next_sample)

    @staticmethod
    def _sentences(
        request: tts_pb2.SynthesizeRequest, text: StreamingText, splitter: SentenceSplitter
    ) -> list[str]:
        kind = request.WhichOneof("payload")
        if kind == "text":
            return splitter.feed(speakable(text.feed(request.text)))
        if kind == "flush":
            return splitter.flush() if request.flush else []
        if kind == "config":
            raise invalid("config", "only the first message may be config")
        raise invalid("payload", "empty message: set text, flush or config")

    async def _speak(self, synthesizer: Synthesizer, sentence: str) -> list[common_pb2.AudioChunk]:
        # The worker thread runs in a copy of this stream's context, so its logs carry the session id.
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, context.run, synthesizer.speak, sentence)

    async def ListVoices(
        self, request: tts_pb2.ListVoicesRequest, context: grpc.aio.ServicerContext
    ) -> tts_pb2.ListVoicesResponse:
        voices = [voice_message(voice, voice.id == self.catalog.default_id)
                  for voice in self.catalog.voices.values()]
        return tts_pb2.ListVoicesResponse(voices=voices)
