from __future__ import annotations

import pytest

from berth.utils.mountinfo import unescape


@pytest.mark.parametrize(
    ("field", "want"),
    [
        ("/var/lib/berth", "/var/lib/berth"),
        ("/mnt/with\\040space", "/mnt/with space"),
        ("/a\\011tab\\012nl\\134bs", "/a\ttab\nnl\\bs"),
        ("/end\\04", "/end\\04"),  # not three digits: kept as written
        ("/x\\", "/x\\"),
    ],
)
def test_unescape(field: str, want: str) -> None:
    assert unescape(field) == want
