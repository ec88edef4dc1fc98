"""Default encoder/decoder pairs for communicator payloads.

kiwipy's default is YAML (``yaml.dump(..., encoding='utf-8')`` / ``yaml.load(..., FullLoader)``).
With PyYAML >= 5.4 the FullLoader refuses ``!!python/object:uuid.UUID``, which is how a
``uuid.UUID`` (a plumpy process id) is dumped, so our YAML decoder is a FullLoader that also
constructs UUIDs (AiiDA does the same). Without PyYAML the default is a MessagePack pair that
round-trips ``uuid.UUID`` and tuples through extension types.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

import msgpack

__all__ = ["msgpack_encoder", "msgpack_decoder", "DEFAULT_ENCODER", "DEFAULT_DECODER", "HAVE_YAML"]

_EXT_UUID = 1
_EXT_TUPLE = 2


def _default(obj: Any) -> Any:
    if isinstance(obj, uuid.UUID):
        return msgpack.ExtType(_EXT_UUID, obj.bytes)
    if isinstance(obj, tuple):
        return msgpack.ExtType(_EXT_TUPLE, msgpack_encoder(list(obj)))
    # strict_types sends subclasses here too: store them as their base type.
    for base in (bool, int, float, str, bytes, dict, list):
        if isinstance(obj, base):
            return base(obj)
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} with the tatzelwurm msgpack encoder")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_UUID:
        return uuid.UUID(bytes=data)
    if code == _EXT_TUPLE:
        return tuple(msgpack_decoder(data))
    return msgpack.ExtType(code, data)


def msgpack_encoder(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True, strict_types=True, default=_default)  # type: ignore[no-any-return]


def msgpack_decoder(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_ext_hook)


try:
    import yaml

    HAVE_YAML = True

    class _YamlLoader(yaml.FullLoader):  # type: ignore[misc,name-defined]
        """FullLoader that also constructs ``uuid.UUID`` (dumped as ``!!python/object:uuid.UUID``)."""

    def _construct_uuid(loader: Any, node: Any) -> uuid.UUID:
        state = loader.construct_mapping(node, deep=True)
        return uuid.UUID(int=state["int"])

    _YamlLoader.add_constructor("tag:yaml.org,2002:python/object:uuid.UUID", _construct_uuid)

    def yaml_encoder(obj: Any) -> bytes:
        return yaml.dump(obj, encoding="utf-8")  # type: ignore[no-any-return]

    def yaml_decoder(data: bytes) -> Any:
        return yaml.load(data, Loader=_YamlLoader)  # noqa: S506 - restricted FullLoader

    __all__ += ["yaml_encoder", "yaml_decoder"]
    DEFAULT_ENCODER: Callable[[Any], bytes] = yaml_encoder
    DEFAULT_DECODER: Callable[[bytes], Any] = yaml_decoder
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_YAML = False
    DEFAULT_ENCODER = msgpack_encoder
    DEFAULT_DECODER = msgpack_decoder
