from synctalk.rpc.gen.lipsync.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SynthesizeConfig(_message.Message):
    __slots__ = ("voice", "speed", "deterministic", "sample_rate")
    VOICE_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    DETERMINISTIC_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    voice: str
    speed: float
    deterministic: bool
    sample_rate: int
    def __init__(self, voice: _Optional[str] = ..., speed: _Optional[float] = ..., deterministic: _Optional[bool] = ..., sample_rate: _Optional[int] = ...) -> None: ...

class SynthesizeRequest(_message.Message):
    __slots__ = ("config", "text", "flush")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FLUSH_FIELD_NUMBER: _ClassVar[int]
    config: SynthesizeConfig
    text: bytes
    flush: bool
    def __init__(self, config: _Optional[_Union[SynthesizeConfig, _Mapping]] = ..., text: _Optional[bytes] = ..., flush: _Optional[bool] = ...) -> None: ...

class ListVoicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Voice(_message.Message):
    __slots__ = ("id", "engine", "language", "native_sample_rate", "is_default")
    ID_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    NATIVE_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    id: str
    engine: str
    language: str
    native_sample_rate: int
    is_default: bool
    def __init__(self, id: _Optional[str] = ..., engine: _Optional[str] = ..., language: _Optional[str] = ..., native_sample_rate: _Optional[int] = ..., is_default: _Optional[bool] = ...) -> None: ...

class ListVoicesResponse(_message.Message):
    __slots__ = ("voices",)
    VOICES_FIELD_NUMBER: _ClassVar[int]
    voices: _containers.RepeatedCompositeFieldContainer[Voice]
    def __init__(self, voices: _Optional[_Iterable[_Union[Voice, _Mapping]]] = ...) -> None: ...
