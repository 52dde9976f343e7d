#!/bin/bash
# Attack-like commands, each undone at the end. Args: WORK_DIR MARKER STORE
# Runs as root under the recorder; only touches system paths named with the marker.
W="$1"; M="$2"; STORE="$3"
cleanup() {
  rm -f "/etc/cron.d/fx-$M" "/var/log/fx-$M.log" "/etc/fx-stamp-$M" "$STORE.fx-$M"
  if [ -n "${PRELOAD_CREATED:-}" ]; then rm -f /etc/ld.so.preload; fi
  userdel -r "fx${M: -6}" >/dev/null 2>&1
}
trap cleanup EXIT
cd "$W" || exit 1
sleep 0.3
cat /etc/shadow > "$W/shadow.copy"                      # shadow read, written elsewhere
printf '# forensix test %s\n' "$M" > "/etc/cron.d/fx-$M"  # cron drop
for i in 1 2 3 4 5; do printf '# %s\n' "$i" >> "/etc/cron.d/fx-$M"; done  # the same finding: one alert
touch "$W/rootsh"; chmod 4755 "$W/rootsh"               # setuid in /tmp
echo "ls" > "$W/.bash_history"; rm -f "$W/.bash_history"  # history removed
cp /usr/bin/id "$W/kworker"; "$W/kworker" >/dev/null     # system binary copied and run
sh -c "echo ZWNobyBmeC1iNjQK | base64 -d | sh" >/dev/null  # base64 to a shell
"${PYTHON:-python3}" -c "import socket; s=socket.socket(); s.bind(('0.0.0.0', 0)); s.listen(1); s.close()"
useradd -M -s /usr/sbin/nologin "fx${M: -6}"              # new user (removed at exit)
if [ ! -e /etc/ld.so.preload ]; then PRELOAD_CREATED=1; fi
: >> /etc/ld.so.preload                                  # preload list opened for writing
echo "x" > "/var/log/fx-$M.log"; rm -f "/var/log/fx-$M.log"  # log deleted
touch "/etc/fx-stamp-$M"; touch -d "2019-01-01 00:00" "/etc/fx-stamp-$M"  # timestomp
cp /usr/bin/true "$W/.x"; ( exec 9<"$W/.x"; rm -f "$W/.x"; /proc/self/fd/9 )  # run from a deleted file
bpftool prog show >/dev/null 2>&1                        # bpf() by another process
touch "$STORE.fx-$M"                                     # the store's files touched
kill -HUP "$PPID"                                        # signal to the recorder
sleep 0.3
exit 0
