"""The lab API server's audit log on the session's lab: a service account's requests show up
(septum.lab.audit reads them), other users' do not. Parsing is tested in test_audit.py."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from septum.lab import audit, config
from septum.lab.audit import ApiCall
from septum.lab.lab import Lab
from septum.lab.pytest_plugin import wait_for

pytestmark = [pytest.mark.privileged, pytest.mark.lab]


@pytest.fixture()
def namespace(lab_namespace: Callable[[str], str]) -> str:
    return lab_namespace("slab-audit")


def _as(lab: Lab, token: str, method: str, path: str, body: object = None) -> int:
    """The status code of one request made with ``token``."""
    context = ssl.create_default_context(cafile=str(lab.state.pki / "ca.crt"))
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        config.apiserver_url() + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_a_service_accounts_requests_are_in_the_audit_log(lab: Lab, namespace: str) -> None:
    assert lab.state.audit_log.exists(), (
        f"{lab.state.audit_log} missing: the running lab predates the audit log "
        "(septum lab down && septum lab up)"
    )
    lab.kubectl("create", "serviceaccount", "-n", namespace, "prober")
    token = lab.kubectl("create", "token", "-n", namespace, "prober").stdout.strip()
    mark = audit.position(lab.state.audit_log)
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    reviews = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
    assert _as(lab, token, "POST", reviews, review) == 201
    assert _as(lab, token, "GET", f"/api/v1/namespaces/{namespace}/pods") == 403
    assert _as(lab, token, "GET", f"/api/v1/namespaces/{namespace}/pods/web/log") == 403
    assert _as(lab, token, "GET", "/version") == 200
    user = audit.service_account_user(namespace, "prober")
    expected = {
        ApiCall("authentication.k8s.io", "selfsubjectreviews", "", "create", 201),
        ApiCall("", "pods", "", "list", 403),
        ApiCall("", "pods", "log", "get", 403),
        ApiCall("", "/version", "", "get", 200),
    }
    seen = wait_for(
        "the requests in the audit log",
        lambda: (calls := audit.calls(lab.state.audit_log, user, since=mark)) >= expected and calls,
        timeout_s=15,
    )
    assert seen == expected  # nothing else was logged for this user
    # The admin's own requests (kubectl above) are no service account's: not logged at all.
    admins = [e for e in audit.events(lab.state.audit_log, mark)
              if e["user"]["username"] == "kubernetes-admin"]  # fmt: skip
    assert admins == []
