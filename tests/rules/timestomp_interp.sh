#!/bin/bash
# An interpreter that writes a file and backdates it, beside copies and extractions that keep
# their sources' old times (test_timestomp_interp_bpf). Args: WORK_DIR
W="$1"
set -e
cd "$W"
PY="${PYTHON:-python3}"
mkdir -p src/tree; printf 'old data\n' > src/old.txt; printf 'in a tree\n' > src/tree/a.txt
touch -d '3 years ago' src/old.txt src/tree/a.txt src/tree
# timestomps: the interpreter made the file itself, from no file it read
"$PY" -c "import os; open('drop-c', 'w').write('payload'); os.utime('drop-c', (1262304000, 1262304000))"
printf 'import os, sys\nopen(sys.argv[1], "w").write("payload")\nos.utime(sys.argv[1], (1262304000, 1262304000))\n' > dropper.py
"$PY" dropper.py drop-script
# copies and extractions: the source's times
"$PY" -c "import shutil; shutil.copy2('src/old.txt', 'copy2.txt')"
"$PY" -c "import shutil; shutil.copytree('src/tree', 'tree-copy')"
cp -p src/old.txt cp-p.txt
tar cf old.tar -C src old.txt tree; mkdir -p tar-x; tar xf old.tar -C tar-x
mkdir -p py-x; "$PY" -c "import tarfile; tarfile.open('old.tar').extractall('py-x')"
echo "timestomp case done"
