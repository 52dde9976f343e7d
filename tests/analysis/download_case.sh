#!/bin/bash
# A download run as a script, as a responder meets it (test_compact_text_bpf): python's
# http.server serves x.sh, curl fetches it as got.sh, bash runs it into out.txt.
# $1: work directory (with www/x.sh), $2: a free TCP port
W=$1; PORT=$2
cd "$W"
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory www >/dev/null 2>&1 &
H=$!
until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do sleep 0.05; done
curl -s -o got.sh "http://127.0.0.1:$PORT/x.sh"
bash got.sh > out.txt
kill $H
wait
