"""Rules of the contract that buf lint does not check: money is never a float."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor

from tests.contract.descriptors import all_messages

pytestmark = pytest.mark.contract

FLOATING = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE}


def _is_floating(field: FieldDescriptor) -> bool:
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        # all_messages() skips map entries, so look at a map's value type here
        return entry.fields_by_name["value"].type in FLOATING
    return field.type in FLOATING


def test_no_float_or_double_field() -> None:
    found = [f.full_name for m in all_messages() for f in m.fields if _is_floating(f)]
    assert found == [], f"money is integer minor units (cents), not a float: {found}"
