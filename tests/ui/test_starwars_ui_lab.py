"""The issue's lab test: Septum helm-installed with the UI, the Star Wars demo and its policy,
and the chart's own `septum ui` pod driven in Debian's chromium: the map shows tiefighter and
xwing -> deathstar with the xwing's edge red, the table lists FORWARDED and DROPPED flows by
pod name, a dropped flow says default deny, filters narrow, export downloads. Screenshots of
each view land in build/ui-screenshots/lab-*.png."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from septum.demo import starwars
from septum.demo.release import Release
from septum.demo.waiting import until
from septum.lab.lab import Lab
from tests.helm.conftest import installed_release
from tests.ui.conftest import screenshot

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

RED, GREEN = "rgb(217, 48, 37)", "rgb(46, 158, 68)"


def _ui_url(release: Release) -> str:
    def running() -> str:
        for pod in release.pods("app.kubernetes.io/name=septum-ui"):
            ready = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
            if ready.get("Ready") == "True" and pod["status"].get("podIP"):
                return f"http://{pod['status']['podIP']}:12000"
        return ""

    return str(until("the UI pod ready", running, 120))


@pytest.fixture(scope="module")
def ui_url(lab: Lab) -> Iterator[str]:
    with installed_release(lab, {"ui.enabled": "true"}) as release:
        try:
            starwars.deploy(lab)
            policy = starwars.apply_policy(lab)
            starwars.wait_enforced(lab, policy, sorted(n.name for n in lab.nodes))
            starwars.check_landings(lab, {"tiefighter": True, "xwing": False})
            yield _ui_url(release)
        finally:
            starwars.delete_policy(lab)
            starwars.remove(lab)


def _edge(page: Any, source: str) -> Any:
    return page.locator(
        f'[data-id="default/{source}->default/deathstar"] path.react-flow__edge-path'
    )


def test_starwars_in_the_ui(ui_url: str, browser: Any) -> None:
    page = browser.new_page()
    page.goto(ui_url + "/#/map")

    # The map: both ships -> deathstar; the xwing's edge red, the tiefighter's green.
    # Attached, not "visible": a straight horizontal edge has a zero-height box, which
    # Playwright counts as hidden.
    _edge(page, "xwing").wait_for(state="attached", timeout=60000)
    _edge(page, "tiefighter").wait_for(state="attached", timeout=60000)
    assert RED in _edge(page, "xwing").evaluate("e => getComputedStyle(e).stroke")
    assert GREEN in _edge(page, "tiefighter").evaluate("e => getComputedStyle(e).stroke")
    page.get_by_test_id("relay-state").filter(has_text="relay ok").wait_for()
    page.get_by_test_id("nodes-state").filter(has_text="2 connected").wait_for()
    screenshot(page, "lab-map")

    # The table: FORWARDED and DROPPED, by pod name, for the deathstar.
    page.get_by_test_id("tab-flows").click()
    page.get_by_test_id("flow-filter").fill("--to-pod default/deathstar --to-port 80")
    page.get_by_test_id("apply-filter").click()
    rows = page.get_by_test_id("flow-row")
    rows.filter(has_text="DROPPED").filter(has_text="default/xwing").first.wait_for(timeout=30000)
    rows.filter(has_text="FORWARDED").filter(has_text="default/tiefighter").first.wait_for()
    assert rows.filter(has_text="default/deathstar-").count() == rows.count()
    screenshot(page, "lab-flows")

    # A dropped flow says why: the default deny of rule1 on the deathstar.
    rows.filter(has_text="DROPPED").first.click()
    why = page.get_by_test_id("flow-why").inner_text()
    assert "Default deny on ingress" in why, why
    assert "default/rule1" in why, why
    screenshot(page, "lab-flow-detail")

    # Filters narrow: only the xwing's drops.
    page.get_by_test_id("flow-filter").fill(
        "--to-pod default/deathstar --verdict DROPPED --from-pod default/xwing"
    )
    page.get_by_test_id("apply-filter").click()
    page.wait_for_function(
        "() => { const r = [...document.querySelectorAll('[data-testid=flow-row]')];"
        " return r.length > 0 && r.every(x => x.dataset.verdict === 'DROPPED'); }"
    )
    assert rows.filter(has_text="default/tiefighter").count() == 0

    # Export downloads the shown flows as Hubble JSON lines.
    with page.expect_download() as download:
        page.get_by_test_id("export").click()
    lines = [json.loads(x) for x in download.value.path().read_text().splitlines()]
    assert lines and all(x["flow"]["verdict"] == "DROPPED" for x in lines)
    assert all(x["flow"]["source"]["pod_name"] == "xwing" for x in lines)
    assert all(x["flow"]["drop_reason_desc"] == "POLICY_DENIED" for x in lines)
