"""The UI in Debian's chromium against a real relay and Observer carrying Star Wars flows:
the map, the flow table, the detail's reason, filters, export, pause, and the status bar."""

from __future__ import annotations

import json
from typing import Any

from tests.ui.conftest import (
    TIEFIGHTER,
    XWING,
    Backend,
    landing,
    screenshot,
    to_world,
)


def _seed(backend: Backend) -> None:
    backend.push(
        *(landing(TIEFIGHTER, 40000 + i, allowed=True) for i in range(3)),
        *(landing(XWING, 41000 + i, allowed=False) for i in range(2)),
        to_world(TIEFIGHTER, 42000),
    )


def test_map_table_detail_filter_export(backend: Backend, start_ui: Any, browser: Any) -> None:
    _seed(backend)
    ui = start_ui(backend.relay_address)
    page = browser.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(ui.url + "/#/map")

    # Service map: both ships -> deathstar, the xwing's edge red, world as its own node.
    canvas = page.get_by_test_id("map-canvas")
    canvas.locator(".react-flow__node", has_text="deathstar").wait_for()
    for name in ("tiefighter", "xwing", "world", "namespace default"):
        canvas.locator(".react-flow__node", has_text=name).first.wait_for()
    page.locator('[data-id="default/xwing->default/deathstar"]').wait_for()
    xwing_edge = page.locator(
        '[data-id="default/xwing->default/deathstar"] path.react-flow__edge-path'
    )
    assert "rgb(217, 48, 37)" in xwing_edge.evaluate("e => getComputedStyle(e).stroke")
    tie_edge = page.locator(
        '[data-id="default/tiefighter->default/deathstar"] path.react-flow__edge-path'
    )
    assert "rgb(46, 158, 68)" in tie_edge.evaluate("e => getComputedStyle(e).stroke")
    assert "80/TCP" in (
        page.locator('[data-id="default/xwing->default/deathstar"]').text_content() or ""
    )
    page.get_by_test_id("relay-state").filter(has_text="relay ok").wait_for()
    screenshot(page, "map")

    # Flow table: FORWARDED and DROPPED with the pods' names.
    page.get_by_test_id("tab-flows").click()
    rows = page.get_by_test_id("flow-row")
    rows.filter(has_text="default/xwing").first.wait_for()
    assert rows.filter(has_text="FORWARDED").filter(has_text="default/tiefighter").count() >= 3
    assert rows.filter(has_text="DROPPED").filter(has_text="default/xwing").count() == 2
    screenshot(page, "flows")

    # Clicking a dropped flow says why: the default deny of the deathstar's policy.
    rows.filter(has_text="DROPPED").first.click()
    why = page.get_by_test_id("flow-why")
    why.wait_for()
    text = why.inner_text()
    assert "Default deny on ingress" in text, text
    assert "CiliumNetworkPolicy default/rule1" in text, text
    detail = page.get_by_test_id("flow-detail").inner_text()
    assert "POLICY_DENIED" in detail and "xwing" in detail and "10.2.0.12" in detail, detail
    link = page.get_by_test_id("explain-link").get_attribute("href") or ""
    assert link.startswith("#/policy?") and "from=default%2Fxwing" in link and "port=80" in link
    screenshot(page, "flow-detail")

    # Hubble's filters narrow the table (the relay filters; the page shows what it sends).
    page.get_by_test_id("flow-filter").fill("--verdict DROPPED --from-pod default/xwing")
    page.get_by_test_id("apply-filter").click()
    page.wait_for_function("() => document.querySelectorAll('[data-testid=flow-row]').length === 2")
    assert rows.filter(has_text="FORWARDED").count() == 0

    # A bad filter is refused with the flag named, nothing applied.
    page.get_by_test_id("flow-filter").fill("--verdict NOPE")
    page.get_by_test_id("apply-filter").click()
    assert "--verdict: invalid value" in page.get_by_test_id("filter-error").inner_text()
    assert rows.count() == 2

    # Export downloads the shown flows as Hubble JSON lines.
    with page.expect_download() as dl:
        page.get_by_test_id("export").click()
    lines = [json.loads(x) for x in dl.value.path().read_text().splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert line["flow"]["verdict"] == "DROPPED"
        assert line["flow"]["source"]["pod_name"] == "xwing"
        assert line["flow"]["drop_reason_desc"] == "POLICY_DENIED"
        assert line["flow"]["ingress_denied_by"][0]["name"] == "rule1"
        assert line["node_name"] == "ui-node-1"

    # Nothing but septum ui itself was contacted: the page works without the internet.
    assert requested and all(url.startswith(ui.url + "/") for url in requested), [
        url for url in requested if not url.startswith(ui.url + "/")
    ]
    assert any("/observer.Observer/GetFlows" in url for url in requested)


def test_follow_pause_resume(backend: Backend, start_ui: Any, browser: Any) -> None:
    ui = start_ui(backend.relay_address)
    page = browser.new_page()
    page.goto(ui.url + "/#/flows")
    page.get_by_test_id("flow-count").filter(has_text="following").wait_for()
    backend.push(landing(TIEFIGHTER, 43000, allowed=True))
    rows = page.get_by_test_id("flow-row")
    rows.filter(has_text="default/tiefighter").first.wait_for()
    page.get_by_test_id("pause").click()
    page.get_by_test_id("flow-count").filter(has_text="paused").wait_for()
    backend.push(landing(XWING, 43001, allowed=False))
    page.wait_for_timeout(1000)
    assert rows.filter(has_text="DROPPED").count() == 0  # paused: nothing new shown
    page.get_by_test_id("pause").click()
    rows.filter(has_text="DROPPED").first.wait_for()


def test_agent_directly_and_stale_relay(backend: Backend, start_ui: Any, browser: Any) -> None:
    """The UI also talks to one agent's Observer; a relay that stops answering is shown."""
    _seed(backend)
    ui = start_ui(backend.agent_address)
    page = browser.new_page()
    page.goto(ui.url + "/#/flows")
    page.get_by_test_id("flow-row").filter(has_text="default/xwing").first.wait_for()
    page.get_by_test_id("relay-state").filter(has_text="relay ok").wait_for()
    backend.node.stop()
    page.get_by_test_id("relay-state").filter(has_text="relay stale").wait_for(timeout=20000)
    screenshot(page, "stale-relay")


def test_a_disconnected_node_is_shown(backend: Backend, start_ui: Any, browser: Any) -> None:
    """The relay loses its only agent: the status bar says which node is unavailable."""
    ui = start_ui(backend.relay_address)
    page = browser.new_page()
    page.goto(ui.url + "/#/flows")
    page.get_by_test_id("nodes-state").filter(has_text="1 connected").wait_for()
    backend.node.stop()
    state = page.get_by_test_id("nodes-state").filter(has_text="1 unavailable: ui-node-1")
    state.wait_for(timeout=20000)
    screenshot(page, "node-unavailable")


def test_lost_events_are_shown(backend: Backend, start_ui: Any, browser: Any) -> None:
    """Events the datapath's ring lost (the source's counter, as the BPF ring reports it) reach
    the page as LostEvent messages in the stream and the status bar counts them."""
    ui = start_ui(backend.relay_address)
    page = browser.new_page()
    page.goto(ui.url + "/#/flows")
    page.get_by_test_id("flow-count").filter(has_text="following").wait_for()
    page.get_by_test_id("lost-events").filter(has_text="lost events 0").wait_for()
    backend.observer.feed.lost = 7  # the fault: the ring overran before the reader drained it
    backend.push(landing(TIEFIGHTER, 46000, allowed=True))
    lost = page.get_by_test_id("lost-events").filter(has_text="PERF_EVENT_RING_BUFFER 7")
    lost.wait_for(timeout=20000)
    assert "lost events 7" in lost.inner_text()
