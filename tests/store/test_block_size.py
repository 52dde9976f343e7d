"""New stores use 64 KiB DuckDB blocks (smaller files: bench/notes.md, "The store's block size");
a store made with DuckDB's default 256 KiB blocks keeps them and opens as before."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from forensix.store import embedded
from forensix.store.embedded import NEW_STORE_BLOCK_SIZE, DuckDBStore


def _block_size(path: Path) -> int:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return int(con.execute("SELECT block_size FROM pragma_database_size()").fetchone()[0])  # type: ignore[index]
    finally:
        con.close()


def test_a_new_store_has_small_blocks_and_an_old_one_keeps_its_own(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    new = tmp_path / "new.duckdb"
    DuckDBStore(new).close()
    assert _block_size(new) == NEW_STORE_BLOCK_SIZE == 64 << 10
    old = tmp_path / "old.duckdb"
    with monkeypatch.context() as m:  # a store made before, with DuckDB's default blocks
        m.setattr(embedded, "NEW_STORE_BLOCK_SIZE", 256 << 10)
        DuckDBStore(old).close()
    assert _block_size(old) == 256 << 10
    DuckDBStore(old).close()  # opened again as the writer: it keeps its blocks
    assert _block_size(old) == 256 << 10
    st = DuckDBStore(old, read_only=True)
    try:
        assert st.query("SELECT count(*) AS n FROM events").column("n").to_pylist() == [0]
    finally:
        st.close()
