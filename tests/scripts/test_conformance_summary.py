"""scripts/conformance_summary.py on the tools' real output, captured from `make conformance`
on the lab (2026-12-06) and cut down (tests/scripts/data/): the network-policy-api suite's
`go test -v` log and cyclonus' JUnit XML and log."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
# scripts/ is no package: load the script as `make conformance` runs it, by path.
_spec = importlib.util.spec_from_file_location(
    "conformance_summary", REPO / "scripts" / "conformance_summary.py"
)
assert _spec is not None and _spec.loader is not None
summary = importlib.util.module_from_spec(_spec)
sys.modules["conformance_summary"] = summary  # dataclasses look their module up
_spec.loader.exec_module(summary)


def test_npapi_log_parses_into_tests_subtests_and_sctp_only_failures() -> None:
    tests = summary.parse_go_test((DATA / "npapi-v0.3.0-excerpt.log").read_text())
    top = {t.name.split("/")[1]: t for t in tests.values() if t.depth == 1}
    assert {name: t.outcome for name, t in top.items()} == {
        "CNPAdminTierEgressNamedPort": "PASS",
        "CNPAdminTierEgressNodePeers": "FAIL",
        "CNPAdminTierGress": "FAIL",
    }
    assert top["CNPAdminTierGress"].seconds == 97.76
    node_peers = "TestConformanceProfiles/CNPAdminTierEgressNodePeers/"
    allow = tests[node_peers + "Should_support_an_'allow-egress'_rule_policy_for_egress-node-peer"]
    deny = tests[node_peers + "Should_support_a_'deny-egress'_rule_policy_for_egress-node-peer"]
    # A TCP probe to the node timed out: a real failure. The deny subtest failed on SCTP alone.
    assert allow.failed_protocols == {"tcp"} and not allow.failed_on_sctp_only
    assert deny.failed_on_sctp_only
    gress = [
        t for t in tests.values() if t.name.startswith("TestConformanceProfiles/CNPAdminTierGress/")
    ]
    assert len(gress) == 6 and all(t.failed_on_sctp_only for t in gress)


def test_npapi_section_and_junit(tmp_path: Path) -> None:
    shutil.copy(DATA / "npapi-v0.3.0-excerpt.log", tmp_path / "npapi.log")
    text = summary.npapi_section(tmp_path, 842, "TestConformanceProfiles/.*SCTP$")
    assert "| CNPAdminTierEgressNamedPort | passed | 1/1 | 6 |" in text
    assert "| CNPAdminTierGress | FAILED | 0/6 | 98 |" in text
    assert "9 subtests failed, 7 of them on SCTP probes only." in text
    assert "1 of 3 tests passed" in text
    root = ET.parse(tmp_path / "junit.xml").getroot()
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    node_peers = suites["TestConformanceProfiles/CNPAdminTierEgressNodePeers"]
    assert (node_peers.get("tests"), node_peers.get("failures")) == ("3", "3")
    failure = node_peers.find("testcase/failure")
    assert failure is not None and "10.213.0.11:34345" in (failure.text or "")


def test_cyclonus_section(tmp_path: Path) -> None:
    shutil.copy(DATA / "cyclonus-v0.5.6-junit.xml", tmp_path / "junit.xml")
    shutil.copy(DATA / "cyclonus-v0.5.6-excerpt.log", tmp_path / "cyclonus.log")
    text = summary.generator_section(tmp_path, 600, "conflict")
    cases = ET.parse(tmp_path / "junit.xml").getroot().findall(".//testcase")
    failed = sum(1 for c in cases if c.find("failure") is not None)
    assert f"{len(cases) - failed} of {len(cases)} cases passed" in text
    assert "| deny all from source, allow all to dest |" in text
    assert "|  - conflict | 16 / 16 = 100% ✅ |" in text and "cleaning up" not in text
    assert "1152 as expected, 0 not, 144 ignored" in text


def test_e2e_form_without_a_suite_name_still_works(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    summary.main([str(tmp_path), "3"])
    assert "0 of 0 specs passed in 3 s" in capsys.readouterr().out


def test_a_retried_probe_that_later_passed_is_not_a_failure() -> None:
    """From the 2026-12-06 run at 2524252: the TCP probe failed once while the policy was being
    applied and passed on its retry; the SCTP probe after it is the one that never did."""
    tests = summary.parse_go_test((DATA / "npapi-v0.3.0-retry-excerpt.log").read_text())
    gress = "TestConformanceProfiles/CNPAdminTierGress/"
    deny = tests[gress + "Should_support_an_'deny-gress'_policy_across_different_protocols"]
    assert [p for _, p in deny.attempts][:2] == ["tcp", "sctp"]
    assert deny.failed_protocols == {"sctp"} and deny.failed_on_sctp_only
