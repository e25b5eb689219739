"""Resume tokens: what a stream is given survives the trip, and anything else is refused."""

from __future__ import annotations

import pytest

from services.order.resume_tokens import BadResumeToken, ResumeToken

pytestmark = pytest.mark.unit


def test_a_resume_token_survives_encoding_and_rejects_garbage() -> None:
    token = ResumeToken({0: 12, 3: 4}, {"a": 2})
    assert ResumeToken.decode(token.encode()) == token
    midway = ResumeToken({0: 1}, {}, initial=True)
    assert ResumeToken.decode(midway.encode()).initial
    for bad in ["", "not-a-token", "eyJwIjogNX0", ResumeToken({0: -1}).encode()]:
        with pytest.raises(BadResumeToken):
            ResumeToken.decode(bad)
