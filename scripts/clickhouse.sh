#!/bin/sh
# Start or stop N local ClickHouse servers (one remote_servers cluster) for tests and benchmarks.
#   scripts/clickhouse.sh start --shards 2 --dir /tmp/me-ch   # prints the store URL
#   scripts/clickhouse.sh stop --dir /tmp/me-ch
exec python3 -m forensix.testing.clickhouse "$@"
