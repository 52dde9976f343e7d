"""The ClickHouse DDL follows store/schema.py: a new cluster has every column of every
table, and a database made by an earlier forensix (before terminal bytes, artifacts and
process.hash.sha256) is brought up to it by the next writer, on every shard."""

from __future__ import annotations

import uuid

import pyarrow as pa

from forensix.store import schema
from forensix.store.clickhouse import ClickHouseStore
from forensix.store.clickhouse.connection import Server
from forensix.store.clickhouse.ddl import (
    FORMAT,
    distributed_sql,
    local_name,
    merge_tree_sql,
    stored_columns,
)
from forensix.testing.clickhouse import Cluster

_NEW_TABLES = ("tty", "artifacts", "artifact_blobs", "accounts")


def _columns(st: ClickHouseStore) -> list[dict[str, list[str]]]:
    out = []
    for srv in st.shards:
        cols: dict[str, list[str]] = {}
        for t, c in srv.execute(f"SELECT table, name FROM system.columns WHERE database = '{st.db}' "
                                "ORDER BY table, name"):
            cols.setdefault(str(t), []).append(str(c))
        out.append(cols)
    return out


def _assert_complete(st: ClickHouseStore) -> None:
    for cols in _columns(st):
        for table in schema.TABLES:
            want = sorted(c for c, _ in stored_columns(table))
            assert sorted(cols[local_name(table, st.cluster)]) == want, table
            assert sorted(cols[table]) == want, table  # the Distributed table reads every column


def _tty_row(host: str) -> pa.Table:
    return pa.Table.from_pylist([{
        "host_id": f"id-{host}", "host_name": host, "boot_id": "b", "ts": 1_790_000_000_000_000_000,
        "direction": "output", "tty": "pts/3", "process_entity_id": 7, "data": b"\x1b[31m\xff\x00ok\r\n",
    }], schema=schema.TTY)


def test_a_new_cluster_has_every_column_of_the_schema(cluster: Cluster) -> None:
    with ClickHouseStore(cluster.url(database=f"s_{uuid.uuid4().hex[:12]}"), write=True) as st:
        _assert_complete(st)
        assert st.migrations() == ["0001_initial", "0002_tty_artifacts_sha256", "0003_fleet_summaries",
                                   "0004_accounts", "0005_hourly_summaries", "0006_path_names", "0007_event_kinds",
                                   "0008_exec_unkeyed"]
        # terminal bytes are bytes, not text: they come back exactly
        st.append("tty", _tty_row("alpha"))
        back = st.select_table("tty")
        assert back.column("data").to_pylist() == [b"\x1b[31m\xff\x00ok\r\n"]
        assert back.column("host_name").to_pylist() == ["alpha"]


def test_a_database_of_an_earlier_forensix_is_migrated_on_every_shard(cluster: Cluster) -> None:
    db = f"o_{uuid.uuid4().hex[:12]}"
    url = cluster.url(database=db)
    cl = cluster.name
    old_tables = [t for t in schema.TABLES if t not in _NEW_TABLES]
    servers = [Server("127.0.0.1", sh.tcp_port) for sh in cluster.shards]
    try:
        for srv in servers:  # what 0001 created before tty, artifacts and the hash column
            srv.execute(f"CREATE DATABASE `{db}`")
            srv.execute(f"CREATE TABLE `{db}`.forensix_migrations (name String, applied_ns Int64) ENGINE = Log")
            srv.execute(f"CREATE TABLE `{db}`.forensix_meta (key String, value String) ENGINE = Log")
            srv.execute(f"INSERT INTO `{db}`.forensix_meta (key, value) VALUES", [["format"], [FORMAT]])
            srv.execute(f"INSERT INTO `{db}`.forensix_migrations (name, applied_ns) VALUES", [["0001_initial"], [1]])
            for t in old_tables:
                srv.execute(merge_tree_sql(db, t, local_name(t, cl)))
                srv.execute(distributed_sql(db, t, cl))
            for t, col in (("events", "process_hash_sha256"), ("processes", "hash_sha256")):
                for name in (local_name(t, cl), t):
                    srv.execute(f"ALTER TABLE `{db}`.`{name}` DROP COLUMN `{col}`")
    finally:
        for srv in servers:
            srv.close()
    with ClickHouseStore(url) as before:
        assert "process_hash_sha256" not in _columns(before)[0]["events"]
    with ClickHouseStore(url, write=True) as st:  # the next forensix server on it
        _assert_complete(st)
        st.append("tty", _tty_row("beta"))
        assert st.select_table("tty").num_rows == 1
