"""Helpers that find every message of the contract and fill one in completely."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType

from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "protos"
GEN_DIR = ROOT / "gen"
PACKAGE = "paysaga.v1"


def proto_files() -> list[Path]:
    """Every .proto of the contract, relative to protos/ (so a new file is covered)."""
    package_dir = PROTO_DIR.joinpath(*PACKAGE.split("."))
    return sorted(p.relative_to(PROTO_DIR) for p in package_dir.glob("*.proto"))


def generated_proto_files() -> list[Path]:
    """Every .proto `make gen` compiles: the contract and the admin API (paysaga.admin.v1)."""
    return sorted(p.relative_to(PROTO_DIR) for p in (PROTO_DIR / "paysaga").rglob("*.proto"))


def pb2_module(proto: Path) -> ModuleType:
    """The generated module of one .proto, e.g. paysaga/v1/orders.proto -> orders_pb2."""
    return importlib.import_module(".".join(proto.with_suffix("").parts) + "_pb2")


def file_descriptors() -> list[FileDescriptor]:
    """The descriptor of every contract file, from the generated code."""
    return [pb2_module(p).DESCRIPTOR for p in proto_files()]


def _walk(messages: Iterable[Descriptor]) -> Iterator[Descriptor]:
    for message in messages:
        if message.GetOptions().map_entry:
            continue
        yield message
        yield from _walk(message.nested_types)


def all_messages() -> list[Descriptor]:
    """Every message (nested ones too, map entries excepted) in every contract file."""
    return [m for f in file_descriptors() for m in _walk(f.message_types_by_name.values())]


# One distinct, non-default value per scalar type, so a field that is dropped or
# swapped with another on the wire shows up as an inequality after the round trip.
def _scalar(field: FieldDescriptor, salt: int) -> object:
    n = field.number + salt
    t = field.type
    if t == FieldDescriptor.TYPE_BOOL:
        return True
    if t == FieldDescriptor.TYPE_STRING:
        return f"{field.name}-{n}"
    if t == FieldDescriptor.TYPE_BYTES:
        return f"{field.name}-{n}".encode()
    if t == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values[-1].number
    if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return n + 0.5
    if t in (FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64):
        return -n
    return n  # every other integer type


def populate(message: Message, depth: int = 0, salt: int = 0) -> Message:
    """Set every field of `message` (recursively) to a non-default value.

    In a oneof, setting a member clears the others: the last member stays set.
    Elements of a repeated field differ from each other (through `salt`).
    Recursive message types stop after a few levels.
    """
    for field in message.DESCRIPTOR.fields:
        value_type = field.message_type
        if field.is_repeated:
            container = getattr(message, field.name)
            if value_type is not None and value_type.GetOptions().map_entry:
                key_field = value_type.fields_by_name["key"]
                value_field = value_type.fields_by_name["value"]
                for entry_salt in (salt + 1, salt + 2):
                    key = _scalar(key_field, entry_salt)
                    if value_field.message_type is not None:
                        if depth < 3:
                            populate(container[key], depth + 1, entry_salt)
                    else:
                        container[key] = _scalar(value_field, entry_salt)
            elif value_type is not None:
                if depth < 3:
                    for element_salt in (1, 2):
                        populate(container.add(), depth + 1, salt + element_salt)
            else:
                container.extend([_scalar(field, salt + 1), _scalar(field, salt + 2)])
        elif value_type is not None:
            if depth < 3:
                populate(getattr(message, field.name), depth + 1, salt)
        else:
            setattr(message, field.name, _scalar(field, salt))
    return message


def populated(descriptor: Descriptor) -> Message:
    """A new instance of the message type with every field set."""
    return populate(GetMessageClass(descriptor)())
