"""The incident page's graph on the recorded intrusion (see conftest): compact by default, the
intruder's chain drawn, everything else counted in group nodes, the full graph on request.

The bound: at most LIMIT (40) nodes drawn, groups included, plus one "more" group per kind of
object: what the page's graph box shows with labels that do not overlap (analysis.graph_compact). The intrusion's own objects
are a dozen; a CI runner's graph of it held 181 objects, so the bound is what keeps it legible.

(This module's name sorts after test_web_browser_bpf, whose live test must run while the
session's recording still runs; ``recorded`` ends it.)
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any

import pytest

from forensix.analysis.graph_compact import LIMIT

from .conftest import SHOTS, Scenario, open_view, shot

pytestmark = pytest.mark.bpf


def _api(sc: Scenario, path: str) -> Any:
    with urllib.request.urlopen(sc.ui.url + path, timeout=60) as r:
        return json.load(r)


def _alert(sc: Scenario) -> str:
    alerts = _api(sc, "/alerts.json?limit=1000")["alerts"]
    mine = [a for a in alerts if sc.tag in (a["summary"] or "") and "cron" in (a["rule_title"] or "").lower()]
    assert mine, [(a["rule_title"], a["summary"]) for a in alerts]
    return str(mine[0]["alert_id"])


def _graph(sc: Scenario, **params: str) -> dict[str, Any]:
    q = urllib.parse.urlencode({"alert": _alert(sc), "part": "graph", **params})
    return _api(sc, "/incident.json?" + q)["graph"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("noise", ["0", "1"])
def test_compact_graph_holds_the_intrusion(recorded: Scenario, noise: str) -> None:
    small, full = _graph(recorded, noise=noise), _graph(recorded, noise=noise, graph="full")
    assert small["compact"] and not full["compact"]
    drawn = [n for n in small["nodes"] if n["kind"] != "group"]
    groups = [n for n in small["nodes"] if n["kind"] == "group"]
    labels = {n["label"] for n in drawn}
    # the intruder's chain: the download, the script and what it ran, the files it left, both connections
    for proc in ("curl [", "chmod [", "cp [", f"{recorded.tag}-copied [", "cat ["):
        assert any(lab.startswith(proc) for lab in labels), (proc, sorted(labels))
    work = str(recorded.work)
    for path in (recorded.cron, f"{work}/x.sh", f"/tmp/{recorded.tag}-copied", f"{work}/id.out"):
        assert path in labels, (path, sorted(labels))
    for port in (recorded.hport, recorded.lport):
        assert any(n["kind"] == "connection" and f"127.0.0.1:{port}" in n["label"] for n in drawn), port
    # nothing lost: every object of the full graph is drawn or counted in exactly one group
    members = [m for g in groups for m in g["members"]]
    assert len(members) == len(set(members)) and all(g["count"] == len(g["members"]) for g in groups)
    assert {n["id"] for n in drawn} | set(members) == {n["id"] for n in full["nodes"]}
    assert small["full"]["nodes"] == len(full["nodes"])
    assert len(small["nodes"]) <= LIMIT + 4, (len(drawn), [g["label"] for g in groups])
    if noise == "1":  # curl's libraries, the locale files: counted, not drawn
        system = [g for g in groups if g["group"] == "system"]
        assert len(system) == 1 and system[0]["count"] >= 10, [g["label"] for g in groups]
        assert {"libraries", "locale"} <= set(system[0]["parts"]), system[0]["parts"]
        assert len(full["nodes"]) > 2 * len(small["nodes"])


def test_incident_page_draws_compact_and_expands(recorded: Scenario, page: Any) -> None:
    q = urllib.parse.urlencode({"alert": _alert(recorded), "noise": "1"})
    open_view(page, recorded.ui.url + "/incident?" + q, "incident")
    page.wait_for_selector("main[data-graph-form=compact]", timeout=60_000)
    full = _graph(recorded, noise="1", graph="full")
    small = page.evaluate("cy.nodes().length")
    assert small <= LIMIT + 4 and small < len(full["nodes"])
    assert "compact:" in page.inner_text(".graph-controls")
    # a group node opens its members
    page.evaluate("cy.nodes(\"[group = 'system']\").emit('tap') && null")
    count = page.evaluate("cy.nodes(\"[group = 'system']\")[0].data('count')")
    assert page.locator(".node-panel ul.members li").count() == min(count, 300)
    page.locator("#graph").screenshot(path=str(SHOTS / "incident-graph-noise.png"))
    # the full graph on request, in place, and back
    page.get_by_role("button", name="show the full graph").first.click()
    page.wait_for_selector("main[data-graph-form=full]", timeout=60_000)
    assert page.evaluate("cy.nodes().length") == len(full["nodes"])
    assert page.evaluate("cy.nodes(\"[kind = 'group']\").length") == 0
    assert "graph=full" in page.url
    shot(page, "incident-full")
    page.get_by_role("button", name="show the compact graph").click()
    page.wait_for_selector("main[data-graph-form=compact]", timeout=60_000)
    assert page.evaluate("cy.nodes().length") == small and "graph=full" not in page.url
