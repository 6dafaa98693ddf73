"""The Policy view in chromium: the policies selecting a workload, explain, and what-if of a
pasted policy replayed against the relay's recent flows (septum.ui.v1 over gRPC-Web)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.ui.conftest import (
    DEATHSTAR,
    TIEFIGHTER,
    XWING,
    Backend,
    landing,
    rule_now_text,
    screenshot,
)

REPO = Path(__file__).resolve().parents[2]


def _pods(tmp: Path) -> Path:
    docs = []
    for ep in (DEATHSTAR, TIEFIGHTER, XWING):
        labels = "\n".join(
            f"    {label.split(':', 1)[1].split('=')[0]}: {label.split('=')[1]}"
            for label in ep.labels
        )
        docs.append(
            f"""apiVersion: v1
kind: Pod
metadata:
  name: {ep.pod_name}
  namespace: {ep.namespace}
  labels:
{labels}
spec:
  nodeName: ui-node-1
  containers: [{{name: c, image: x}}]
status:
  phase: Running
  podIP: {ep.ips[0]}
  podIPs: [{{ip: {ep.ips[0]}}}]
"""
        )
    path = tmp / "pods.yaml"
    path.write_text("---\n".join(docs))
    return path


# The candidate: the alliance may land too.
CANDIDATE = """apiVersion: septum.io/v2
kind: SeptumNetworkPolicy
metadata:
  name: rule1
  namespace: default
spec:
  endpointSelector:
    matchLabels: {org: empire, class: deathstar}
  ingress:
    - fromEndpoints:
        - matchLabels: {org: empire}
        - matchLabels: {org: alliance}
      toPorts:
        - ports: [{port: "80", protocol: TCP}]
"""


def test_policies_explain_and_what_if(
    backend: Backend, start_ui: Any, browser: Any, tmp_path: Path
) -> None:
    backend.push(
        landing(TIEFIGHTER, 45000, allowed=True),
        landing(XWING, 45001, allowed=False),
        landing(XWING, 45002, allowed=False),
    )
    ui = start_ui(
        backend.relay_address,
        "-f",
        str(_pods(tmp_path)),
        "-f",
        str(REPO / "examples/starwars/policy-l3-l4.yaml"),
    )
    page = browser.new_page()
    page.goto(ui.url + "/#/policy?workload=default/" + DEATHSTAR.pod_name)
    listed = page.get_by_test_id("policy-list")
    listed.wait_for()
    assert "rule1" in listed.inner_text() and "NORMAL" in listed.inner_text()

    # Explain: the xwing is denied by the default deny of rule1 on the deathstar's ingress.
    page.get_by_test_id("explain-from").fill("default/xwing")
    page.get_by_test_id("explain-to").fill("default/" + DEATHSTAR.pod_name)
    page.get_by_test_id("explain").click()
    result = page.get_by_test_id("explain-result")
    result.wait_for()
    text = result.inner_text()
    assert text.startswith("DENIED"), text
    assert "rule1" in text, text

    # A bad endpoint is an error naming the field, not a blank panel.
    page.get_by_test_id("explain-from").fill("default/nobody")
    page.get_by_test_id("explain").click()
    assert "source/destination" in page.get_by_test_id("explain-error").inner_text()

    # What-if: the candidate lets the alliance land; the xwing's dropped flows would change.
    page.get_by_test_id("whatif-manifests").fill(CANDIDATE)
    page.get_by_test_id("whatif").click()
    page.get_by_test_id("whatif-result").wait_for(timeout=30000)
    rows = page.get_by_test_id("whatif-row")
    assert rows.count() == 1, page.get_by_test_id("whatif-result").inner_text()
    row = rows.first.inner_text()
    assert "default/xwing" in row and "DENIED" in row and "ALLOWED" in row, row
    screenshot(page, "policy")

    page.get_by_test_id("whatif-manifests").fill("kind: SeptumNetworkPolicy\nspec: 3\n")
    page.get_by_test_id("whatif").click()
    assert "manifests" in page.get_by_test_id("whatif-error").inner_text()

    # The flow detail names the deciding rule as the policies are now (Explain for the
    # flow's pods and port, the flow's direction): here the default deny of rule1.
    page.goto(ui.url + "/#/flows")
    flows = page.get_by_test_id("flow-row")
    flows.filter(has_text="DROPPED").first.click()
    text = rule_now_text(page)
    assert "Deciding rule on ingress, as the policies are now" in text, text
    assert "default deny" in text and "default/rule1" in text, text
    assert "Changed since this flow" not in text, text
    screenshot(page, "flow-detail-rule")


def test_without_policies_the_view_says_why(
    backend: Backend, start_ui: Any, browser: Any, monkeypatch: Any
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    ui = start_ui(backend.relay_address)
    page = browser.new_page()
    page.goto(ui.url + "/#/policy")
    error = page.get_by_test_id("policy-error")
    error.wait_for()
    assert "without --kubeconfig or -f" in error.inner_text()

    # The flow detail then adds nothing to the flow's own "why", and logs no errors.
    backend.push(landing(XWING, 46000, allowed=False))
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.goto(ui.url + "/#/flows")
    with page.expect_response(lambda r: r.url.endswith("/septum.ui.v1.PolicyService/Explain")):
        page.get_by_test_id("flow-row").filter(has_text="DROPPED").first.click()
    # The detail marks when Explain's answer (here: no policies) has been handled.
    page.locator('[data-testid=flow-why][data-rule-now="none"]').wait_for()
    assert "Default deny on ingress" in page.get_by_test_id("flow-why").inner_text()
    assert page.get_by_test_id("flow-rule-now").count() == 0
    assert console == [], console
