from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
    DTYPE_FLOAT16: _ClassVar[DType]
    DTYPE_UINT8: _ClassVar[DType]

class ImageEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_ENCODING_UNSPECIFIED: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_JPEG: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_RAW_RGB: _ClassVar[ImageEncoding]
DTYPE_UNSPECIFIED: DType
DTYPE_FLOAT32: DType
DTYPE_FLOAT16: DType
DTYPE_UINT8: DType
IMAGE_ENCODING_UNSPECIFIED: ImageEncoding
IMAGE_ENCODING_JPEG: ImageEncoding
IMAGE_ENCODING_RAW_RGB: ImageEncoding

class AudioChunk(_message.Message):
    __slots__ = ("pcm", "sample_rate", "start_sample", "sentence_index", "text", "end_of_sentence")
    PCM_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    START_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    SENTENCE_INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    END_OF_SENTENCE_FIELD_NUMBER: _ClassVar[int]
    pcm: bytes
    sample_rate: int
    start_sample: int
    sentence_index: int
    text: str
    end_of_sentence: bool
    def __init__(self, pcm: _Optional[bytes] = ..., sample_rate: _Optional[int] = ..., start_sample: _Optional[int] = ..., sentence_index: _Optional[int] = ..., text: _Optional[str] = ..., end_of_sentence: _Optional[bool] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("data", "shape", "dtype")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: DType
    def __init__(self, data: _Optional[bytes] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[DType, str]] = ...) -> None: ...

class FeatureFrame(_message.Message):
    __slots__ = ("index", "pts_ms", "features", "mode", "rms", "voiced")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PTS_MS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    RMS_FIELD_NUMBER: _ClassVar[int]
    VOICED_FIELD_NUMBER: _ClassVar[int]
    index: int
    pts_ms: int
    features: Tensor
    mode: str
    rms: float
    voiced: bool
    def __init__(self, index: _Optional[int] = ..., pts_ms: _Optional[int] = ..., features: _Optional[_Union[Tensor, _Mapping]] = ..., mode: _Optional[str] = ..., rms: _Optional[float] = ..., voiced: _Optional[bool] = ...) -> None: ...

class VideoFrame(_message.Message):
    __slots__ = ("index", "pts_ms", "encoding", "data", "width", "height", "source_frame", "idle")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PTS_MS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FRAME_FIELD_NUMBER: _ClassVar[int]
    IDLE_FIELD_NUMBER: _ClassVar[int]
    index: int
    pts_ms: int
    encoding: ImageEncoding
    data: bytes
    width: int
    height: int
    source_frame: int
    idle: bool
    def __init__(self, index: _Optional[int] = ..., pts_ms: _Optional[int] = ..., encoding: _Optional[_Union[ImageEncoding, str]] = ..., data: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., source_frame: _Optional[int] = ..., idle: _Optional[bool] = ...) -> None: ...

class FieldViolation(_message.Message):
    __slots__ = ("field", "description")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    field: str
    description: str
    def __init__(self, field: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...
