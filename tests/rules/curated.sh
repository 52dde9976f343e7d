#!/bin/bash
# What the curated set must see through kernel facts, each undone at the end.
# Args: WORK_DIR MARKER. Runs as root under the recorder.
W="$1"; M="$2"; U="fxc${M: -6}"
UNIT="/etc/systemd/system/fx-$M"
cleanup() {
  rm -f "$UNIT.service" "$UNIT.timer" "/etc/systemd/system/timers.target.wants/fx-$M.timer"
  userdel "$U" >/dev/null 2>&1
}
trap cleanup EXIT
cd "$W" || exit 1
sleep 0.3
# a shell fed through a pipe by a decoder or a download (no pipe in any command line)
echo ZWNobyBmeC1waXBlCg== | base64 -d | sh >/dev/null
printf '6563686f2066782d7878640a' | xxd -r -p | bash >/dev/null
printf 'echo fx-ossl\n' > "$W/s.txt"; openssl enc -base64 -in "$W/s.txt" -out "$W/s.b64"
openssl enc -d -base64 -in "$W/s.b64" | sh >/dev/null
curl -s "file://$W/s.txt" | bash >/dev/null
# timestomping of any file: times set into the past, or copied from another file
touch "$W/ts-a" "$W/ts-m" "$W/ts-r" "$W/ts-d" "$W/ts-now" "$W/ts-py" "$W/ts-os" "$W/ts-copy-src"
touch -a -t 197001010000.00 "$W/ts-a"
touch -m -t 197001010000.00 "$W/ts-m"
touch -r /bin/sh "$W/ts-r"
touch -d '2 years ago' "$W/ts-d"
# backdated by Python's os.utime (a file it did not write): the detector, not fx_timestomp
"${PYTHON:-python3}" -c "import os, sys; os.utime(sys.argv[1], (1262304000, 1262304000))" "$W/ts-os"
# a copy keeping its source's old times (shutil.copy2: written, then copystat): quiet
touch -d '3 years ago' "$W/ts-copy-src"
"${PYTHON:-python3}" -c "import shutil, sys; shutil.copy2(sys.argv[1], sys.argv[2])" "$W/ts-copy-src" "$W/ts-copy"
# set to now, not back: touch on an existing file, pathlib's touch (times NULL)
touch "$W/ts-now"
"${PYTHON:-python3}" -c "import pathlib, sys; pathlib.Path(sys.argv[1]).touch()" "$W/ts-py"
# utimensat(AT_FDCWD, f, NULL, 0) with leftovers in the registers past its four arguments
# (what a busy process such as pytest calling Path.touch() leaves there): still "now"
"${PYTHON:-python3}" -c "import ctypes, platform, sys; ctypes.CDLL(None).syscall({'x86_64': 280, 'aarch64': 88}[platform.machine()], -100, sys.argv[1].encode(), None, 0, 4096, 8192)" "$W/ts-py"
# an account created, changed and removed (names in the alerts)
useradd -M -s /usr/sbin/nologin "$U"
usermod -c "fx test" "$U"
userdel "$U"
# a service and a timer unit created, the timer enabled
printf '[Service]\nExecStart=/bin/true\n' > "$UNIT.service"
printf '[Timer]\nOnCalendar=daily\n' > "$UNIT.timer"
mkdir -p /etc/systemd/system/timers.target.wants
ln -s "$UNIT.timer" "/etc/systemd/system/timers.target.wants/fx-$M.timer"
# a binary written by a decoder, then run
base64 /usr/bin/true > "$W/payload.b64"
base64 -d "$W/payload.b64" > "$W/.payload"; chmod +x "$W/.payload"; "$W/.payload"
# a script without #! written by a decoder, run (its exec fails, the shell runs it)
printf 'echo fx-script\n' | base64 > "$W/enc"; base64 -d "$W/enc" > "$W/run.sh"; chmod +x "$W/run.sh"; "$W/run.sh" >/dev/null
# a shell startup file given a command; a history searched by another program
mkdir -p "$W/home"; echo "echo fx-$M" >> "$W/home/.bashrc"
printf 'mysql -p hunter2\n' > "$W/home/.bash_history"; cat "$W/home/.bash_history" | grep -q -- -p
# shell history removed with its whole directory tree by a cleanup (low), and wiped (high)
for d in tree-py/h tree-rm/h h-rm h-ln h-tr h-find; do mkdir -p "$W/$d"; printf 'ls\n' > "$W/$d/.bash_history"; done
"${PYTHON:-python3}" -c "import shutil, sys; shutil.rmtree(sys.argv[1])" "$W/tree-py"
rm -rf "$W/tree-rm"
rm "$W/h-rm/.bash_history"
ln -sf /dev/null "$W/h-ln/.bash_history"
truncate -s 0 "$W/h-tr/.bash_history"
find "$W/h-find" -name .bash_history -delete
# a binary padded with a null and a random byte (its hash changes, not what it does)
cp /usr/bin/true "$W/padded"; dd if=/dev/zero bs=1 count=1 >> "$W/padded" 2>/dev/null
dd if=/dev/urandom of="$W/padded" bs=1 count=1 oflag=append conv=notrunc 2>/dev/null
# credential files read
mkdir -p "$W/home/.ssh"; printf 'fake key %s\n' "$M" > "$W/home/.ssh/id_ed25519"
cat "$W/home/.ssh/id_ed25519" > /dev/null
"${PYTHON:-python3}" -c "open('/etc/gshadow').read()"
sleep 0.3
exit 0
