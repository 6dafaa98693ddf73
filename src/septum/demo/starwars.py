"""Cilium's Star Wars demo on the lab: the deathstar, two ships, a landing request each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from septum.demo.errors import DemoError
from septum.demo.waiting import until
from septum.lab.lab import Lab

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "starwars"
APP = EXAMPLE / "app.yaml"
POLICY_L3_L4 = EXAMPLE / "policy-l3-l4.yaml"
POLICY_L7 = EXAMPLE / "policy-l7.yaml"
NAMESPACE = "default"
DEATHSTAR = "deathstar.default.svc.cluster.local"
SHIPS = ("tiefighter", "xwing")
LANDING_TIMEOUT_S = 3  # a dropped SYN is retried, never refused: the request times out


@dataclass(frozen=True)
class Landing:
    ship: str
    landed: bool
    output: str  # what the ship's curl printed, or why it failed


def deploy(lab: Lab, timeout_s: float = 180) -> None:
    lab.kubectl("apply", "-n", NAMESPACE, "-f", str(APP))
    lab.kubectl(
        "wait", "-n", NAMESPACE, "--for=condition=Ready", "pod", "-l", "org in (empire,alliance)",
        f"--timeout={timeout_s:.0f}s", timeout_s=timeout_s + 10,
    )  # fmt: skip
    until("the deathstar Service to have 2 ready endpoints", lambda: _ready_endpoints(lab) >= 2, 60)


def remove(lab: Lab) -> None:
    lab.kubectl("delete", "-n", NAMESPACE, "-f", str(APP), "--ignore-not-found", "--wait=true",
                "--timeout=120s", check=False, timeout_s=130)  # fmt: skip


def _ready_endpoints(lab: Lab) -> int:
    slices = lab.get_json(
        "endpointslices", "-n", NAMESPACE, "-l", "kubernetes.io/service-name=deathstar"
    )
    return sum(
        1
        for s in slices.get("items", [])
        for e in s.get("endpoints") or []
        if e.get("conditions", {}).get("ready")
    )


def land(lab: Lab, ship: str, timeout_s: float = LANDING_TIMEOUT_S) -> Landing:
    """`kubectl exec <ship> -- curl -s -XPOST deathstar.../v1/request-landing`."""
    proc = lab.kubectl(
        "exec", "-n", NAMESPACE, ship, "--", "curl", "-sS", "--max-time", f"{timeout_s:g}",
        "-XPOST", f"http://{DEATHSTAR}/v1/request-landing",
        check=False, timeout_s=timeout_s + 30,
    )  # fmt: skip
    # curl's own message (stderr), not kubectl's "command terminated with exit code N".
    said = [
        line for line in (proc.stdout + "\n" + proc.stderr).splitlines()
        if line.strip() and not line.startswith("command terminated")
    ]  # fmt: skip
    text = said[-1].strip() if said else f"exit {proc.returncode}"
    return Landing(ship, proc.returncode == 0 and "Ship landed" in proc.stdout, text)


@dataclass(frozen=True)
class Answer:
    """One HTTP request of a ship to the deathstar, as curl saw it."""

    ship: str
    method: str
    path: str
    status: int  # the HTTP status; 0 when no answer came (dropped: curl's deadline)
    body: str  # the response body's first line, or curl's error

    @property
    def line(self) -> str:
        """`PUT /v1/exhaust-port -> 403 Access denied`, what a user reads."""
        outcome = f"{self.status} {self.body}" if self.status else f"no answer ({self.body})"
        return f"{self.method} {self.path} -> {outcome}"


STATUS_MARK = "\nseptum-status:"  # curl's -w output after the body, told apart from it


def ask(
    lab: Lab, ship: str, method: str, path: str, timeout_s: float = LANDING_TIMEOUT_S
) -> Answer:
    """`kubectl exec <ship> -- curl -X<method> deathstar.../<path>`: the status and body."""
    proc = lab.kubectl(
        "exec", "-n", NAMESPACE, ship, "--", "curl", "-sS", "--max-time", f"{timeout_s:g}",
        "-X", method, "-w", STATUS_MARK.replace("\n", "\\n") + "%{http_code}",
        f"http://{DEATHSTAR}{path}", check=False, timeout_s=timeout_s + 30,
    )  # fmt: skip
    body, mark, status = proc.stdout.rpartition(STATUS_MARK)
    if not mark or proc.returncode != 0 or not status.strip().isdigit():
        said = [
            line for line in proc.stderr.splitlines()
            if line.strip() and not line.startswith("command terminated")
        ]  # fmt: skip
        return Answer(
            ship, method, path, 0, said[-1].strip() if said else f"exit {proc.returncode}"
        )
    first = next((line.strip() for line in body.splitlines() if line.strip()), "")
    return Answer(ship, method, path, int(status), first)


def apply_policy(lab: Lab, path: Path = POLICY_L3_L4) -> dict[str, Any]:
    lab.kubectl("apply", "-n", NAMESPACE, "-f", str(path))
    return dict(lab.get_json("-n", NAMESPACE, "-f", str(path)))


def delete_policy(lab: Lab, path: Path = POLICY_L3_L4) -> None:
    lab.kubectl("delete", "-n", NAMESPACE, "-f", str(path), "--ignore-not-found", check=False)


def wait_enforced(
    lab: Lab, policy: dict[str, Any], nodes: list[str], timeout_s: float = 60
) -> None:
    """Until every node's agent reports the policy's current generation enforcing."""
    kind = policy["kind"].lower()
    name = policy["metadata"]["name"]
    namespace = policy["metadata"].get("namespace", NAMESPACE)

    def enforcing_everywhere() -> bool:
        current = lab.get_json(kind, "-n", namespace, name)
        generation = current["metadata"].get("generation")
        per_node = current.get("status", {}).get("nodes") or {}
        return all(
            per_node.get(n, {}).get("enforcing") and per_node[n].get("revision") == generation
            for n in nodes
        )

    until(f"{kind}/{name} to be enforced on {', '.join(nodes)}", enforcing_everywhere, timeout_s)


def check_landings(lab: Lab, expected: dict[str, bool]) -> list[Landing]:
    """Every ship tries once; an outcome other than the expected one is an error."""
    results = [land(lab, ship) for ship in expected]
    wrong = [r for r in results if r.landed != expected[r.ship]]
    if wrong:
        raise DemoError(
            "unexpected landing: "
            + "; ".join(f"{r.ship} {'landed' if r.landed else 'did not land'} ({r.output})"
                        for r in wrong)
        )  # fmt: skip
    return results
