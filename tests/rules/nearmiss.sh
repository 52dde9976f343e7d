#!/bin/bash
# Benign near-misses of tests/rules/curated.sh: each must stay quiet.
# Args: WORK_DIR MARKER. Runs as root under the recorder.
W="$1"; M="$2"; U="fxn${M: -6}"
trap 'userdel -r "$U" >/dev/null 2>&1' EXIT
set -e
cd "$W"
sleep 0.3
echo aGkK | base64 -d | cat >/dev/null                 # decoded, but into no shell
printf 'echo hi\n' > s.sh; cat s.sh | sh >/dev/null     # a shell fed by a pipe, not from a decoder
touch new-file; cp -p /bin/true kept-times               # times now; times kept by cp
"${PYTHON:-python3}" -c "import shutil; shutil.copytree('/usr/share/doc/bash', 'doc-copy')"  # times kept by copystat
useradd --create-home -s /usr/sbin/nologin "$U"          # /etc/skel copied with its times
id root >/dev/null; getent passwd root >/dev/null
ls /etc/systemd/system >/dev/null; printf '[Service]\n' > "$W/not-a-unit.service"
printf '#include <stdio.h>\nint main(void){puts("hi");return 0;}\n' > hello.c
cc -O1 -o hello hello.c; ./hello >/dev/null              # a compile and its run
cat /etc/passwd >/dev/null; ls -l /etc/shadow >/dev/null
mkdir -p home; printf 'ls\n' > home/.bash_history; HOME="$W/home" bash -i -c true >/dev/null 2>&1  # a shell reads its history and .bashrc
cat home/.bashrc >/dev/null 2>&1 || true
dd if=/dev/urandom of=key bs=16 count=1 2>/dev/null     # random bytes into a new file: no padding
"${PYTHON:-python3}" -c "open('/dev/urandom','rb').read(4); open('app.log','a').write('x' * 100)"  # seed read, longer log line appended
echo "nearmiss done $M"
