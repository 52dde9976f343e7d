#!/bin/bash
# Benign work that must raise no alert: a C build with make, a Debian package built,
# installed and removed with dpkg, a pip install of a wheel, a small test suite, cron's
# run-parts, and an administrator's interactive shell. Args: WORK_DIR MARKER
W="$1"; M="$2"
set -e
cd "$W"
mkdir -p src pkg/DEBIAN pkg/usr/bin whl/fxdemo whl/fxdemo-0.1.dist-info tests site
cat > src/hello.c <<'C'
#include <stdio.h>
int main(void) { puts("hello"); return 0; }
C
printf 'hello: hello.c\n\tcc -O2 -o hello hello.c\n' > src/Makefile
make -s -C src
./src/hello >/dev/null
cp src/hello pkg/usr/bin/fx-hello
printf 'Package: fx-hello-%s\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: test\n' "$M" > pkg/DEBIAN/control
dpkg-deb --build pkg fx-hello.deb >/dev/null
echo 'X = 1' > whl/fxdemo/__init__.py
printf 'Metadata-Version: 2.1\nName: fxdemo\nVersion: 0.1\n' > whl/fxdemo-0.1.dist-info/METADATA
printf 'Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n' > whl/fxdemo-0.1.dist-info/WHEEL
printf 'fxdemo/__init__.py,,\nfxdemo-0.1.dist-info/METADATA,,\nfxdemo-0.1.dist-info/WHEEL,,\nfxdemo-0.1.dist-info/RECORD,,\n' > whl/fxdemo-0.1.dist-info/RECORD
(cd whl && "${PYTHON:-python3}" -m zipfile -c ../fxdemo-0.1-py3-none-any.whl fxdemo fxdemo-0.1.dist-info)
"${PYTHON:-python3}" -m pip install -q --no-index --no-deps --disable-pip-version-check --target site fxdemo-0.1-py3-none-any.whl
printf 'def test_one():\n    assert 1 + 1 == 2\n\ndef test_two(tmp_path):\n    (tmp_path / "f").write_text("x")\n' > tests/test_demo.py
# its own --basetemp: pytest otherwise prunes old runs under the shared /tmp/pytest-of-root (other
# engineers' and earlier tests' temp dirs, one holding a test .bash_history that it then "removes")
"${PYTHON:-python3}" -m pytest -q -p no:cacheprovider --basetemp "$W/pytest-tmp" tests >/dev/null
mv pkg/usr/bin/fx-hello "pkg/usr/bin/fx-hello-$M"
dpkg-deb --build pkg fx-hello.deb >/dev/null
dpkg -i fx-hello.deb >/dev/null                      # installed, run, removed
"fx-hello-$M" >/dev/null
dpkg -r "fx-hello-$M" >/dev/null
run-parts --test /etc/cron.daily >/dev/null          # what cron would run
script -qc "bash -i -c 'cd /etc; ls >/dev/null; id; cat hostname; ps -ef >/dev/null; history | tail -1'" /dev/null >/dev/null
echo "benign done $M"
