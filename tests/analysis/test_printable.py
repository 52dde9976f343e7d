"""What an intruder names is shown, never obeyed: control characters in recorded text are escaped
in every text view (render/printable.py), and kept as recorded in JSON.

Found by CI (2026-12-07): the CI job's ancestor was a multi-line ``sh -c`` script, so the process
line of the text graph broke in two and a reader of the object list (test_compact_text_bpf) read a
fragment as an object. An intruder can do the same on purpose: a newline in a command line forges
a line of the tree, an ANSI escape in a file name recolours or clears the investigator's terminal,
a right-to-left override shows ``gpj.exe`` as ``exe.jpg``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from forensix.cli.main import cli
from forensix.model.identity import format_entity
from forensix.render.printable import printable
from forensix.store.embedded import open_writer
from forensix.testing.generator import StoreBuilder

FORGED = "x\n2026-01-01T00:00:00.000000Z  0000000000000000        1  root(0)         /sbin/innocent"
ESC_FILE = "/tmp/\x1b[2J\x1b[32mclean\x1b[0m"
RLO_FILE = "/tmp/report\u202egpj.exe"
RAW = ("\n2026-01-01", "\x1b", "\u202e")
SH: list[str] = []  # the entity id of the sh that wrote them


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    b = StoreBuilder()
    init = b.spawn(None, 1, 0, "/sbin/init", ["/sbin/init"])
    sh = b.spawn(init, 10, 1, "/bin/sh", ["sh", "-c", FORGED])
    b.write_file(sh, 2, ESC_FILE, 10)
    b.write_file(sh, 3, RLO_FILE, 10)
    b.read_file(sh, 4, "/etc/back\\slash")
    path = tmp_path_factory.mktemp("printable") / "s.duckdb"
    w = open_writer(path)
    b.write(w)
    w.close()
    SH.append(format_entity(sh.entity_id))
    return str(path)


def _run(store: str, *args: str) -> str:
    r = CliRunner().invoke(cli, [args[0], "--store", store, *args[1:]])
    assert r.exit_code == 0, r.output
    return r.stdout


def test_printable_escapes_unambiguously() -> None:
    assert printable("plain é ü /tmp/a b") == "plain é ü /tmp/a b"
    assert printable("a\nb\tc\rd\x1b[0m\x7f\x9b") == "a\\nb\\tc\\rd\\x1b[0m\\x7f\\x9b"
    assert printable("report\u202egpj.exe\u200b") == "report\\u202egpj.exe\\u200b"
    # a name holding a backslash and an n is not shown as one holding a newline
    assert printable("a\\nb") == "a\\\\nb" != printable("a\nb")


@pytest.mark.parametrize("view", [("tree",), ("timeline",), ("backtrack", ESC_FILE), ("forward", "sh")])
def test_text_views_escape_what_was_recorded(store: str, view: tuple[str, ...]) -> None:
    out = _run(store, *(SH[0] if v == "sh" else v for v in view))
    for raw in RAW:
        assert raw not in out, (view, out)
    if view[0] in ("tree", "forward"):
        assert "sh -c x\\n2026-01-01" in out, out
    if view[0] != "tree":
        assert "/tmp/\\x1b[2J\\x1b[32mclean\\x1b[0m" in out, out
    if view[0] in ("timeline", "forward"):
        assert "/tmp/report\\u202egpj.exe" in out, out
    # the forged process line is part of sh's line, not a line of its own
    assert not [x for x in out.splitlines() if x.lstrip().startswith("2026-01-01")], out


def test_json_keeps_the_bytes_as_recorded(store: str) -> None:
    rows = [json.loads(x) for x in _run(store, "timeline", "--format", "json").splitlines()]
    paths = {r.get("file.path") for r in rows}
    assert ESC_FILE in paths and RLO_FILE in paths and "/etc/back\\slash" in paths


def test_markdown_report_rows_stay_rows(store: str, tmp_path: Path) -> None:
    from forensix.analysis.report import build_report
    from forensix.analysis.targets import Target
    from forensix.render.report import render_markdown
    from forensix.store.embedded import open_reader

    rep = build_report(open_reader(store), Target("file", path=ESC_FILE))
    buf = io.StringIO()
    render_markdown(rep, buf)
    for raw in RAW:
        assert raw not in buf.getvalue()
