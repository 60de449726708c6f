"""Feast's serialized entity key, built directly for the serving read's one-string-key case.

Feast's ``serialize_entity_key`` is general (any number of keys and value types) and costs a
few microseconds a key in Python; the serving reads call it for every user of every batch.
"""

from __future__ import annotations

import struct

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.value_type import ValueType

_UINT = struct.Struct("<I")
_PREFIXES: dict[str, bytes] = {}


def entity_key_bytes(entity_key: EntityKey, version: int) -> bytes:
    """``serialize_entity_key(entity_key, version)``'s bytes: one string join key directly,
    any other key through Feast's serializer."""
    values = entity_key.entity_values
    if version < 3 or len(values) != 1 or values[0].WhichOneof("val") != "string_val":
        return serialize_entity_key(entity_key, version)
    name = entity_key.join_keys[0]
    prefix = _PREFIXES.get(name)
    if prefix is None:
        encoded = name.encode()
        prefix = b"".join(
            (
                _UINT.pack(1),
                _UINT.pack(ValueType.STRING.value),
                _UINT.pack(len(encoded)),
                encoded,
                _UINT.pack(ValueType.STRING.value),
            )
        )
        _PREFIXES[name] = prefix
    value: bytes = values[0].string_val.encode()
    return prefix + _UINT.pack(len(value)) + value
