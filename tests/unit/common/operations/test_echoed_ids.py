"""An operator's wrong dead-letter id comes back cut short, never repeated whole."""

from __future__ import annotations

import pytest

from services.common.messaging.journal import TABLES
from services.common.operations import deadletters
from services.common.persistence.db import Database

pytestmark = pytest.mark.unit


def test_an_unknown_dead_letter_id_is_echoed_cut_short(store_url: str) -> None:
    db = Database(store_url)
    db.create_tables(list(TABLES))
    huge = "x" * 60_000
    with pytest.raises(deadletters.NoSuchDeadLetter) as raised:
        deadletters.get_dead_letter(db, huge)
    message = str(raised.value)
    assert len(message) < 200 and "(60000 characters)" in message
    db.dispose()
