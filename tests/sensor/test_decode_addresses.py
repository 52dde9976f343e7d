"""The decoder formats each distinct (family, address) of a batch once and takes the text
for every row: the text of every row must still be that row's own address."""

import ipaddress

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from forensix.sensor.strings import _addresses

_ROW = st.tuples(
    st.sampled_from([2, 10, 1]),  # AF_INET, AF_INET6, AF_UNIX (no address)
    # few distinct bytes, so rows repeat and differ only in the family or in one word
    st.lists(st.sampled_from([0, 1, 10, 255]), min_size=16, max_size=16),
    st.booleans(),
)


def _expected(family: int, raw: bytes) -> str | None:
    if family == 2:
        return str(ipaddress.IPv4Address(raw[:4]))
    a = ipaddress.IPv6Address(raw)
    return str(a.ipv4_mapped) if a.ipv4_mapped else str(a)


@settings(max_examples=200, deadline=None)
@given(st.lists(_ROW, min_size=1, max_size=60))
def test_every_row_gets_its_own_address(rows: list[tuple[int, list[int], bool]]) -> None:
    fam = np.array([r[0] for r in rows], np.uint16)
    addr = np.array([r[1] for r in rows], np.uint8)
    inet = np.array([r[2] and r[0] != 1 for r in rows], bool)
    got = _addresses(fam, addr, inet).to_pylist()
    want = [_expected(f, bytes(a)) if ok else None for f, a, ok in zip(fam, addr, inet)]
    assert got == want


def test_same_bytes_in_two_families_are_two_addresses() -> None:
    # 127.0.0.1 and the IPv6 address whose first four bytes are 7f000001
    addr = np.zeros((2, 16), np.uint8)
    addr[:, :4] = [127, 0, 0, 1]
    got = _addresses(np.array([2, 10], np.uint16), addr, np.ones(2, bool)).to_pylist()
    assert got == ["127.0.0.1", "7f00:1::"]
