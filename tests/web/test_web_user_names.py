"""The process view and the timeline of the UI name each uid as the process's host had it
(uid 1001 is alice on web01 and bob on db01, in one store): in the JSON and in a real chromium."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from forensix.model.identity import format_entity
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.fleet import one_uid_two_users
from forensix.web.app import create_app

from .conftest import UIServer, open_view


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("web-users") / "fleet.duckdb"
    with open_writer(path) as w:
        shells = one_uid_two_users(w)
    return path, {h: format_entity(e) for h, e in shells.items()}


def test_process_and_timeline_json_name_the_users(store: tuple[Path, dict[str, str]]) -> None:
    path, shells = store
    with TestClient(create_app(lambda: open_reader(path), str(path))) as c:
        for host, user in (("web01", "alice"), ("db01", "bob")):
            d = c.get(f"/process/{shells[host]}.json").json()
            last = d["images"][-1]
            assert (last["user_id"], last["user_name"], last["user_effective_name"]) == (1001, user, user)
            assert [(r["event_action"], r["user_name"]) for r in d["credential_changes"]] == [("setuid", user)]
            t = c.get("/timeline.json?" + urllib.parse.urlencode({"entity": shells[host]})).json()
            assert t["events"] and {r["user_name"] for r in t["events"]} == {user}


@pytest.fixture(scope="module")
def ui(store: tuple[Path, dict[str, str]]) -> Iterator[UIServer]:
    srv = UIServer(store[0])
    yield srv
    srv.stop()


def test_the_pages_show_name_and_uid(store: tuple[Path, dict[str, str]], ui: UIServer, page: Any) -> None:
    shells = store[1]
    open_view(page, f"{ui.url}/process/{shells['web01']}", "process")
    text = page.inner_text("main")
    assert "uid alice(1001) euid alice(1001)" in text, text[:800]
    assert "bob" not in text
    open_view(page, f"{ui.url}/timeline?" + urllib.parse.urlencode({"entity": shells["db01"]}), "timeline")
    text = page.inner_text("main")
    assert "bob(1001)" in text and "alice" not in text, text[:800]
