from synctalk.rpc.gen.lipsync.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AnimateConfig(_message.Message):
    __slots__ = ("avatar", "voice", "encoding", "jpeg_quality", "sample_rate", "idle_between_utterances")
    AVATAR_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    JPEG_QUALITY_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    IDLE_BETWEEN_UTTERANCES_FIELD_NUMBER: _ClassVar[int]
    avatar: str
    voice: str
    encoding: _common_pb2.ImageEncoding
    jpeg_quality: int
    sample_rate: int
    idle_between_utterances: bool
    def __init__(self, avatar: _Optional[str] = ..., voice: _Optional[str] = ..., encoding: _Optional[_Union[_common_pb2.ImageEncoding, str]] = ..., jpeg_quality: _Optional[int] = ..., sample_rate: _Optional[int] = ..., idle_between_utterances: _Optional[bool] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AnimateRequest(_message.Message):
    __slots__ = ("config", "audio", "text", "cancel")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    config: AnimateConfig
    audio: _common_pb2.AudioChunk
    text: bytes
    cancel: Cancel
    def __init__(self, config: _Optional[_Union[AnimateConfig, _Mapping]] = ..., audio: _Optional[_Union[_common_pb2.AudioChunk, _Mapping]] = ..., text: _Optional[bytes] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ...) -> None: ...

class AnimatedFrame(_message.Message):
    __slots__ = ("frame", "audio", "session_id")
    FRAME_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    frame: _common_pb2.VideoFrame
    audio: bytes
    session_id: str
    def __init__(self, frame: _Optional[_Union[_common_pb2.VideoFrame, _Mapping]] = ..., audio: _Optional[bytes] = ..., session_id: _Optional[str] = ...) -> None: ...
