"""The issue's lab test: Septum helm-installed with the UI, the Star Wars demo and its policy,
and the chart's own `septum ui` pod driven in Debian's chromium: the map shows tiefighter and
xwing -> deathstar with the xwing's edge red, the table lists FORWARDED and DROPPED flows by
pod name, a dropped flow says default deny, filters narrow, export downloads; the Policy view
reads the cluster's own policy through the UI's ServiceAccount (no manifests given): the
policies selecting the deathstar, explain, what-if; and the API server's audit log shows that
account used exactly its read-only rules. Screenshots of each view land in
build/ui-screenshots/lab-*.png."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from septum.demo import starwars
from septum.demo.release import Release
from septum.demo.waiting import until
from septum.lab import audit
from septum.lab.lab import Lab
from tests.helm.conftest import installed_release
from tests.ui.conftest import rule_now_text, screenshot
from tests.ui.test_policy_view import CANDIDATE

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


class Deployed:
    def __init__(self, lab: Lab, release: Release, audit_from: audit.LogPosition) -> None:
        self.lab, self.release, self.audit_from = lab, release, audit_from
        self.url = _ui_url(release)


@pytest.fixture(scope="module")
def deployed(lab: Lab) -> Iterator[Deployed]:
    audit_from = audit.position(lab.state.audit_log)
    with installed_release(lab, {"ui.enabled": "true"}) as release:
        try:
            starwars.deploy(lab)
            policy = starwars.apply_policy(lab)
            starwars.wait_enforced(lab, policy, sorted(n.name for n in lab.nodes))
            starwars.check_landings(lab, {"tiefighter": True, "xwing": False})
            yield Deployed(lab, release, audit_from)
        finally:
            starwars.delete_policy(lab)
            starwars.remove(lab)


@pytest.fixture(scope="module")
def ui_url(deployed: Deployed) -> str:
    return deployed.url


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
    # ...and the deciding rule as the policies are now (Explain against the cluster's policies).
    text = rule_now_text(page)
    assert "Deciding rule on ingress, as the policies are now" in text, text
    assert "default deny" in text and "default/rule1" in text, text
    assert "Changed since this flow" not in text, text
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


def test_the_policy_view_reads_the_cluster(deployed: Deployed, browser: Any) -> None:
    """No -f: the chart's UI pod reads the cluster's policies through its own account."""
    deathstars = deployed.lab.get_json("pods", "-n", "default", "-l", "class=deathstar")["items"]
    target = f"default/{deathstars[0]['metadata']['name']}"
    page = browser.new_page()
    page.goto(f"{deployed.url}/#/policy?workload={target}")
    listed = page.get_by_test_id("policy-list")
    listed.wait_for(timeout=30000)
    assert "rule1" in listed.inner_text(), listed.inner_text()

    page.get_by_test_id("explain-from").fill("default/xwing")
    page.get_by_test_id("explain-to").fill(target)
    page.get_by_test_id("explain").click()
    result = page.get_by_test_id("explain-result")
    result.wait_for(timeout=30000)
    assert result.inner_text().startswith("DENIED") and "rule1" in result.inner_text()

    # What-if, replayed against the relay's recent flows: letting the alliance land changes
    # the xwing's dropped landings (and only those).
    page.get_by_test_id("whatif-manifests").fill(CANDIDATE)
    page.get_by_test_id("whatif").click()
    page.get_by_test_id("whatif-result").wait_for(timeout=60000)
    rows = page.get_by_test_id("whatif-row")
    assert rows.count() >= 1, page.get_by_test_id("whatif-result").inner_text()
    for i in range(rows.count()):
        row = rows.nth(i).inner_text()
        assert "default/xwing" in row and "DENIED" in row and "ALLOWED" in row, row
    screenshot(page, "lab-policy")


def test_the_ui_account_used_exactly_its_read_only_rules(deployed: Deployed) -> None:
    """Run after the Policy view: the audit log's calls by septum-ui against the chart's rules
    (a 403 is a missing rule; a rule never used is one too many)."""
    release = deployed.release
    rendered = release.helm("template", release.name, str(release.chart),
                            "-n", release.namespace, "--set", "ui.enabled=true")  # fmt: skip
    (role,) = [
        d
        for d in yaml.safe_load_all(rendered)
        if d and d["kind"] == "ClusterRole" and d["metadata"]["name"] == "septum-ui"
    ]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    user = audit.service_account_user(release.namespace, "septum-ui")
    calls = {
        c
        for c in audit.calls(deployed.lab.state.audit_log, user, since=deployed.audit_from)
        if not c.resource.startswith("/")
    }
    assert calls, "the UI pod made no API call"
    refused = sorted(c for c in calls if c.code == 403)
    assert not refused, f"calls no rule allows: {refused}"
    used = {(c.api_group, c.resource, c.verb) for c in calls}
    assert used <= granted, sorted(used - granted)
    # The CRD read happens only when a policy kind is not served; the chart installs them all.
    rare = {("apiextensions.k8s.io", "customresourcedefinitions", "get")}
    assert granted - used <= rare, sorted(granted - used - rare)
