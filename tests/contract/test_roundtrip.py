"""Every event and API message survives serialize -> parse with all its fields set."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import Descriptor

from tests.contract.descriptors import all_messages, populated

pytestmark = pytest.mark.contract

MESSAGES = all_messages()


def test_the_contract_has_messages() -> None:
    assert len(MESSAGES) > 0, "no messages found: are protos/ and gen/ where expected?"


@pytest.mark.parametrize("descriptor", MESSAGES, ids=lambda d: d.full_name)
def test_every_field_is_populated(descriptor: Descriptor) -> None:
    message = populated(descriptor)
    set_fields = {field.name for field, _ in message.ListFields()}
    expected = set()
    for field in descriptor.fields:
        oneof = field.containing_oneof
        # Of a real oneof only the last member can be set; proto3 `optional`
        # fields sit in a synthetic oneof of their own and are all set.
        if oneof is None or oneof.fields[-1] is field or len(oneof.fields) == 1:
            expected.add(field.name)
    assert expected - set_fields == set(), "populated() left fields unset"


@pytest.mark.parametrize("descriptor", MESSAGES, ids=lambda d: d.full_name)
def test_round_trip(descriptor: Descriptor) -> None:
    message = populated(descriptor)
    wire = message.SerializeToString(deterministic=True)
    parsed = type(message).FromString(wire)
    assert parsed == message
    assert parsed.SerializeToString(deterministic=True) == wire
