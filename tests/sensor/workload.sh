#!/bin/bash
# A scripted workload with known actions, recorded by tests/sensor/test_record_workload.py.
# $1: a scratch directory; $2: a marker argument that identifies this run.
set -eu
D=$1
cd "$D"
/bin/sh -c '/bin/echo fx-chain-arg1 "fx chain arg2" > /dev/null'      # an exec chain with arguments
mkdir real
ln -s "$D/real" link
echo data > "$D/link/created.txt"                                    # created through a symlink
mv "$D/link/created.txt" "$D/link/renamed.txt"                      # renamed through it (absolute)
cd link                                                              # the kernel's cwd is real/
mv renamed.txt moved.txt                                             # renamed (relative)
rm moved.txt                                                         # unlinked (relative)
cd "$D"
python3 - <<'PY'
import socket
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
port = srv.getsockname()[1]
open("port.txt", "w").write(str(port))
cli = socket.create_connection(("127.0.0.1", port))
conn, _ = srv.accept()
cli.sendall(b"x" * 1000); conn.recv(4096)
cli.close(); conn.close(); srv.close()
PY
echo through-a-pipe | cat > /dev/null                                # a pipe between two processes
python3 -c 'import os; os.setresuid(65534, 65534, 65534)'            # a setuid change
sh -c 'exit 3' || true                                                # exits with code 3
