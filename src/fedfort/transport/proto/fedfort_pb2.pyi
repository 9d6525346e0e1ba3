from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NdArray(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ValueList(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, items: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class Field(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: Value
    def __init__(self, name: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...

class ValueMap(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[Field]
    def __init__(self, entries: _Optional[_Iterable[_Union[Field, _Mapping]]] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("type", "fields")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    type: str
    fields: _containers.RepeatedCompositeFieldContainer[Field]
    def __init__(self, type: _Optional[str] = ..., fields: _Optional[_Iterable[_Union[Field, _Mapping]]] = ...) -> None: ...

class Value(_message.Message):
    __slots__ = ("none", "boolean", "integer", "real", "text", "blob", "array", "items", "mapping", "record")
    NONE_FIELD_NUMBER: _ClassVar[int]
    BOOLEAN_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    REAL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MAPPING_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    none: bool
    boolean: bool
    integer: int
    real: float
    text: str
    blob: bytes
    array: NdArray
    items: ValueList
    mapping: ValueMap
    record: Record
    def __init__(self, none: _Optional[bool] = ..., boolean: _Optional[bool] = ..., integer: _Optional[int] = ..., real: _Optional[float] = ..., text: _Optional[str] = ..., blob: _Optional[bytes] = ..., array: _Optional[_Union[NdArray, _Mapping]] = ..., items: _Optional[_Union[ValueList, _Mapping]] = ..., mapping: _Optional[_Union[ValueMap, _Mapping]] = ..., record: _Optional[_Union[Record, _Mapping]] = ...) -> None: ...

class IdentityBinding(_message.Message):
    __slots__ = ("federation_id", "subject", "public_key", "version", "certificate", "signature", "proof")
    FEDERATION_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    federation_id: str
    subject: str
    public_key: bytes
    version: int
    certificate: bytes
    signature: bytes
    proof: bytes
    def __init__(self, federation_id: _Optional[str] = ..., subject: _Optional[str] = ..., public_key: _Optional[bytes] = ..., version: _Optional[int] = ..., certificate: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., proof: _Optional[bytes] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("federation_id", "sender", "recipient", "kind", "round", "attempt", "step", "nonce", "payload_sha256", "payload_size", "key_version", "signature")
    FEDERATION_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SHA256_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SIZE_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    federation_id: str
    sender: str
    recipient: str
    kind: str
    round: int
    attempt: int
    step: int
    nonce: bytes
    payload_sha256: bytes
    payload_size: int
    key_version: int
    signature: bytes
    def __init__(self, federation_id: _Optional[str] = ..., sender: _Optional[str] = ..., recipient: _Optional[str] = ..., kind: _Optional[str] = ..., round: _Optional[int] = ..., attempt: _Optional[int] = ..., step: _Optional[int] = ..., nonce: _Optional[bytes] = ..., payload_sha256: _Optional[bytes] = ..., payload_size: _Optional[int] = ..., key_version: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("envelope", "chunk", "server_key")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    SERVER_KEY_FIELD_NUMBER: _ClassVar[int]
    envelope: Envelope
    chunk: bytes
    server_key: IdentityBinding
    def __init__(self, envelope: _Optional[_Union[Envelope, _Mapping]] = ..., chunk: _Optional[bytes] = ..., server_key: _Optional[_Union[IdentityBinding, _Mapping]] = ...) -> None: ...

class Payload(_message.Message):
    __slots__ = ("body", "directory", "padding", "pad_adjust")
    BODY_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    PADDING_FIELD_NUMBER: _ClassVar[int]
    PAD_ADJUST_FIELD_NUMBER: _ClassVar[int]
    body: Value
    directory: _containers.RepeatedCompositeFieldContainer[IdentityBinding]
    padding: bytes
    pad_adjust: bool
    def __init__(self, body: _Optional[_Union[Value, _Mapping]] = ..., directory: _Optional[_Iterable[_Union[IdentityBinding, _Mapping]]] = ..., padding: _Optional[bytes] = ..., pad_adjust: _Optional[bool] = ...) -> None: ...

class DataSchema(_message.Message):
    __slots__ = ("features", "classes", "task", "image_shape")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHAPE_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedScalarFieldContainer[str]
    classes: _containers.RepeatedScalarFieldContainer[str]
    task: str
    image_shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, features: _Optional[_Iterable[str]] = ..., classes: _Optional[_Iterable[str]] = ..., task: _Optional[str] = ..., image_shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Declaration(_message.Message):
    __slots__ = ("config_identity", "schema")
    CONFIG_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    config_identity: str
    schema: DataSchema
    def __init__(self, config_identity: _Optional[str] = ..., schema: _Optional[_Union[DataSchema, _Mapping]] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("identity", "declaration")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    DECLARATION_FIELD_NUMBER: _ClassVar[int]
    identity: IdentityBinding
    declaration: Declaration
    def __init__(self, identity: _Optional[_Union[IdentityBinding, _Mapping]] = ..., declaration: _Optional[_Union[Declaration, _Mapping]] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("accepted", "reason", "detail")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    detail: str
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class EnrollReply(_message.Message):
    __slots__ = ("verdict", "server", "round")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    server: IdentityBinding
    round: int
    def __init__(self, verdict: _Optional[_Union[Verdict, _Mapping]] = ..., server: _Optional[_Union[IdentityBinding, _Mapping]] = ..., round: _Optional[int] = ...) -> None: ...

class PollRequest(_message.Message):
    __slots__ = ("federation_id", "client_id", "server_key_version")
    FEDERATION_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    federation_id: str
    client_id: str
    server_key_version: int
    def __init__(self, federation_id: _Optional[str] = ..., client_id: _Optional[str] = ..., server_key_version: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("federation_id", "client_id")
    FEDERATION_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    federation_id: str
    client_id: str
    def __init__(self, federation_id: _Optional[str] = ..., client_id: _Optional[str] = ...) -> None: ...

class HeartbeatReply(_message.Message):
    __slots__ = ("round", "finished")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    round: int
    finished: bool
    def __init__(self, round: _Optional[int] = ..., finished: _Optional[bool] = ...) -> None: ...
