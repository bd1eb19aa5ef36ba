from synctalk.rpc.gen.lipsync.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RenderConfig(_message.Message):
    __slots__ = ("avatar", "encoding", "jpeg_quality", "crop_only", "start_frame")
    AVATAR_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    JPEG_QUALITY_FIELD_NUMBER: _ClassVar[int]
    CROP_ONLY_FIELD_NUMBER: _ClassVar[int]
    START_FRAME_FIELD_NUMBER: _ClassVar[int]
    avatar: str
    encoding: _common_pb2.ImageEncoding
    jpeg_quality: int
    crop_only: bool
    start_frame: int
    def __init__(self, avatar: _Optional[str] = ..., encoding: _Optional[_Union[_common_pb2.ImageEncoding, str]] = ..., jpeg_quality: _Optional[int] = ..., crop_only: _Optional[bool] = ..., start_frame: _Optional[int] = ...) -> None: ...

class RenderRequest(_message.Message):
    __slots__ = ("config", "frame")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    config: RenderConfig
    frame: _common_pb2.FeatureFrame
    def __init__(self, config: _Optional[_Union[RenderConfig, _Mapping]] = ..., frame: _Optional[_Union[_common_pb2.FeatureFrame, _Mapping]] = ...) -> None: ...

class ListAvatarsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AvatarInfo(_message.Message):
    __slots__ = ("name", "width", "height", "num_frames", "fps", "feature_modes", "still_jpeg")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_MODES_FIELD_NUMBER: _ClassVar[int]
    STILL_JPEG_FIELD_NUMBER: _ClassVar[int]
    name: str
    width: int
    height: int
    num_frames: int
    fps: float
    feature_modes: _containers.RepeatedScalarFieldContainer[str]
    still_jpeg: bytes
    def __init__(self, name: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., num_frames: _Optional[int] = ..., fps: _Optional[float] = ..., feature_modes: _Optional[_Iterable[str]] = ..., still_jpeg: _Optional[bytes] = ...) -> None: ...

class ListAvatarsResponse(_message.Message):
    __slots__ = ("avatars",)
    AVATARS_FIELD_NUMBER: _ClassVar[int]
    avatars: _containers.RepeatedCompositeFieldContainer[AvatarInfo]
    def __init__(self, avatars: _Optional[_Iterable[_Union[AvatarInfo, _Mapping]]] = ...) -> None: ...

class GetAvatarRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class IdleLoopRequest(_message.Message):
    __slots__ = ("avatar", "feature_mode", "encoding", "jpeg_quality")
    AVATAR_FIELD_NUMBER: _ClassVar[int]
    FEATURE_MODE_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    JPEG_QUALITY_FIELD_NUMBER: _ClassVar[int]
    avatar: str
    feature_mode: str
    encoding: _common_pb2.ImageEncoding
    jpeg_quality: int
    def __init__(self, avatar: _Optional[str] = ..., feature_mode: _Optional[str] = ..., encoding: _Optional[_Union[_common_pb2.ImageEncoding, str]] = ..., jpeg_quality: _Optional[int] = ...) -> None: ...
