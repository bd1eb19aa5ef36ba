from synctalk.rpc.gen.lipsync.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListModesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FeatureMode(_message.Message):
    __slots__ = ("name", "shape", "lookahead_frames", "is_default", "trimmed_lookahead_frames")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    LOOKAHEAD_FRAMES_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    TRIMMED_LOOKAHEAD_FRAMES_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    lookahead_frames: int
    is_default: bool
    trimmed_lookahead_frames: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., lookahead_frames: _Optional[int] = ..., is_default: _Optional[bool] = ..., trimmed_lookahead_frames: _Optional[_Iterable[int]] = ...) -> None: ...

class ListModesResponse(_message.Message):
    __slots__ = ("modes",)
    MODES_FIELD_NUMBER: _ClassVar[int]
    modes: _containers.RepeatedCompositeFieldContainer[FeatureMode]
    def __init__(self, modes: _Optional[_Iterable[_Union[FeatureMode, _Mapping]]] = ...) -> None: ...
