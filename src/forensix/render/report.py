"""Incident reports as Markdown and HTML, the dependency graph drawn by Graphviz ``dot``."""

from __future__ import annotations

import html
import io
import shutil
import subprocess
from typing import Any

import pyarrow as pa

from forensix.analysis.graph import Graph, Node
from forensix.analysis.report import Report
from forensix.analysis.users import RECORDED, SOURCE_NOTES
from forensix.errors import ForensixError
from forensix.model.identity import format_entity
from forensix.model.timefmt import format_ns
from forensix.render.graph import group_text, life_line, size_line, to_dot
from forensix.render.printable import printable
from forensix.render.tables import display_value, iter_dicts
from forensix.render.tree import render_tree_text, user_label

__all__ = ["GraphvizMissing", "draw", "render_html", "render_markdown"]


class GraphvizMissing(ForensixError):
    pass


def draw(dot_source: str, fmt: str = "svg") -> bytes:
    """Run Graphviz ``dot`` on the source; the drawing's bytes."""
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizMissing("Graphviz `dot` is not installed", "apt-get install graphviz")
    r = subprocess.run([exe, f"-T{fmt}"], input=dot_source.encode(), capture_output=True, timeout=120, check=False)
    if r.returncode != 0:
        raise ForensixError(f"dot failed: {r.stderr.decode(errors='replace')[:300]}", "report this graph")
    return r.stdout


def _cell(name: str, v: Any) -> str:
    v = display_value(name, v)
    if v is None:
        return ""
    if isinstance(v, list):
        v = " ".join(str(x) for x in v)
    return printable(str(v))


def _md_table(t: pa.Table, limit: int = 200) -> str:
    if t.num_rows == 0:
        return "_none recorded_\n"
    cols = t.column_names
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for i, r in enumerate(iter_dicts(t)):
        if i >= limit:
            lines.append(f"| … {t.num_rows - limit} more rows |" + " |" * (len(cols) - 1))
            break
        lines.append("| " + " | ".join(_cell(c, r[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines) + "\n"


_NONE = "not found"  # never a bare dash: the reader must know the record was searched


def _actor_text(rep: Report) -> str:
    if rep.actor is None:
        return _NONE
    n = rep.graph.nodes.get(f"p:{format_entity(rep.actor)}")
    args = " ".join((n.attrs.get("args") or []) if n else [])
    # the image it ran when it last changed the target, when that is the actor (not its last image)
    label = next((lab for e, lab, _ in rep.actors if e == rep.actor), n.label if n else "")
    if n is not None and label != n.label:
        args = ""  # the arguments are its last image's
    return f"{label} {format_entity(rep.actor)}" + (f" `{args[:120]}`" if args else "")


def _user_text(s: dict[str, object]) -> str:
    uid, source = s.get("user_id"), s.get("user_name_source")
    name = s.get("user_name")
    label = user_label(name if isinstance(name, str) else None, uid if isinstance(uid, int) else None,
                       source if isinstance(source, str) else None)
    note = SOURCE_NOTES.get(str(source)) if source not in (None, RECORDED) else None
    return f"{label} ({note})" if note else label


def _summary(rep: Report) -> list[tuple[str, str]]:
    s = rep.session or {}
    src = f"{s.get('source_ip')}:{s.get('source_port')}" if s.get("source_ip") else _NONE
    user = _user_text(s) if s else _NONE
    rows = [("Detection point", rep.target.describe())]
    if rep.graph.life:
        rows.append(("File life", life_line(rep.graph.life)))
    return rows + [
        ("Acting process", _actor_text(rep)),
        ("Changed by", "; ".join(f"{label} {format_entity(e)}: {', '.join(k)}" for e, label, k in rep.actors)
         or _NONE),
        ("Entry point", f"{s.get('kind')}: {s.get('description')}" if s else _NONE),
        ("Session leader", format_entity(s["leader_entity_id"]) if s else _NONE),
        ("Audit session id", str(s.get("audit_session_id") or _NONE)),
        ("User", user), ("Source address", src),
        ("Session time", f"{format_ns(s.get('start_ts'))} – {format_ns(s.get('end_ts')) or 'running'}" if s
         else _NONE),
        ("su/sudo transitions", ", ".join(s.get("transitions") or []) or "none"),
        ("Processes in session", str(s.get("processes") or 0)),
    ]


def _tree_text(rep: Report) -> str:
    buf = io.StringIO()
    render_tree_text(rep.tree, buf)
    return buf.getvalue()


def _sections(rep: Report) -> list[tuple[str, pa.Table]]:
    return [("Files written", rep.files_written), ("Files deleted", rep.files_deleted),
            ("Persistence touched", rep.persistence), ("Network peers", rep.network),
            ("Timeline", rep.timeline.select(["ts", "process_pid", "process_name", "event_action", "message"]))]


def render_markdown(rep: Report, out: Any, image: str | None = None) -> None:
    """Markdown; ``image``: a file name of the drawn graph to link, else the DOT source inline."""
    out.write(f"# {printable(rep.title)}\n\n")
    for note in rep.notes:
        out.write(f"> note: {printable(note)}\n\n")
    out.write("| | |\n|---|---|\n")
    for k, v in _summary(rep):
        out.write(f"| {k} | " + printable(v).replace("|", "\\|") + " |\n")
    out.write("\n## Process tree of the session\n\n```\n" + _tree_text(rep) + "```\n\n")
    for title, table in _sections(rep):
        out.write(f"## {title}\n\n{_md_table(table)}\n")
    g = rep.drawn[0]
    out.write(f"## Dependency graph (backward from {printable(rep.target.describe())})\n\n")
    out.write(f"{size_line(g)}; noise filters: {', '.join(g.filters) or 'off'}.\n\n")
    out.write("".join(f"- folded: {printable(group_text(n))}\n" for n in _groups(g)) + ("\n" if _groups(g) else ""))
    if image:
        out.write(f"![dependency graph]({image})\n\n")
    else:
        out.write("```dot\n" + to_dot(g) + "```\n\n")
    if rep.impact is not None:
        files = sorted({n.label for n in rep.impact.nodes.values() if n.kind == "file" and n.depth > 0})
        out.write(f"## Impact (forward from the session)\n\n{len(rep.impact.nodes)} objects reached. "
                  "Files affected:\n\n" + "".join(f"- `{printable(f)}`\n" for f in files[:200]) + "\n")


def _groups(g: Graph) -> list[Node]:
    return sorted(g.node_by("group"), key=lambda n: (n.depth, n.label, n.key))


_CSS = """body{font-family:Helvetica,Arial,sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;font-size:12px;margin-bottom:1em}td,th{border:1px solid #ccc;padding:2px 6px;
text-align:left;vertical-align:top}th{background:#eee}pre{background:#f6f6f6;padding:8px;font-size:11px;
overflow-x:auto}.note{color:#a00}svg{max-width:100%;height:auto}"""


def _html_table(t: pa.Table, limit: int = 500) -> str:
    if t.num_rows == 0:
        return "<p><em>none recorded</em></p>"
    cols = t.column_names
    rows = ["<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>"]
    for i, r in enumerate(iter_dicts(t)):
        if i >= limit:
            rows.append(f"<tr><td colspan={len(cols)}>… {t.num_rows - limit} more rows</td></tr>")
            break
        rows.append("<tr>" + "".join(f"<td>{html.escape(_cell(c, r[c]))}</td>" for c in cols) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def render_html(rep: Report, out: Any, svg: bytes | None = None) -> None:
    """HTML with the graph drawn inline (SVG from ``dot``; drawn here when not given)."""
    g = rep.drawn[0]
    if svg is None:
        svg = draw(to_dot(g), "svg")
    text = svg.decode(errors="replace")
    text = text[text.find("<svg"):] if "<svg" in text else text
    def e(text: str) -> str:
        return html.escape(printable(text))

    out.write(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(rep.title)}</title>"
              f"<style>{_CSS}</style></head><body><h1>{e(rep.title)}</h1>")
    for note in rep.notes:
        out.write(f"<p class='note'>note: {e(note)}</p>")
    out.write("<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _summary(rep))
              + "</table>")
    out.write(f"<h2>Process tree of the session</h2><pre>{html.escape(_tree_text(rep))}</pre>")
    for title, table in _sections(rep):
        out.write(f"<h2>{e(title)}</h2>{_html_table(table)}")
    out.write(f"<h2>Dependency graph (backward from {e(rep.target.describe())})</h2>"
              f"<p>{e(size_line(g))}; noise filters: {e(', '.join(g.filters) or 'off')}.</p>")
    if _groups(g):
        out.write("<ul>" + "".join(f"<li>folded: {e(group_text(n))}</li>" for n in _groups(g)) + "</ul>")
    out.write(text)
    if rep.impact is not None:
        files = sorted({n.label for n in rep.impact.nodes.values() if n.kind == "file" and n.depth > 0})
        out.write("<h2>Impact (forward from the session)</h2><ul>"
                  + "".join(f"<li><code>{e(f)}</code></li>" for f in files[:200]) + "</ul>")
    out.write("</body></html>\n")
