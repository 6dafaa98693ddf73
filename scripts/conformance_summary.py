"""Summarises one conformance suite's results as a Markdown section of build/conformance/summary.md
(scripts/conformance.sh), from each tool's own output:

- ``e2e DIR SECONDS``: the e2e suite's JUnit XML (``junit_01.xml`` in DIR): one row per spec.
- ``npapi DIR SECONDS``: the network-policy-api suite's ``go test -v`` log (``npapi.log``); one
  row per test and one per failed subtest, and a JUnit XML of the same (``junit.xml`` in DIR: a
  Go test binary writes none). A failed subtest whose failed probes were all SCTP is marked so:
  this lab's kernel has no SCTP, and the probe that failed ended the subtest.
- ``generator DIR SECONDS``: cyclonus' JUnit XML (``junit.xml``) and log (``cyclonus.log``): the
  pass rate of its cases, its probe counts and its own table by tag.

``DIR SECONDS`` alone is the e2e form, as before.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path


def footer(what: str, seconds: int) -> str:
    today = datetime.datetime.now(datetime.UTC)
    return f"{what} in {seconds} s on {os.cpu_count()} cores, {today:%Y-%m-%d}."


# --- e2e ------------------------------------------------------------------------------------


def e2e_rows(report_dir: Path) -> list[tuple[str, str, float]]:
    rows = []
    for path in sorted(report_dir.glob("junit*.xml")):
        for case in ET.parse(path).getroot().iter("testcase"):
            if case.find("skipped") is not None:
                continue
            failed = case.find("failure") is not None or case.find("error") is not None
            name = case.get("name", "").replace("[It] ", "")
            rows.append((name, "FAILED" if failed else "passed", float(case.get("time", 0))))
    return [r for r in rows if "Netpol" in r[0] or "NetworkPolicy" in r[0]]


def e2e_section(report_dir: Path, seconds: int, skip: str) -> str:
    specs = e2e_rows(report_dir)
    passed = sum(1 for r in specs if r[1] == "passed")
    lines = ["## Upstream e2e NetworkPolicy specs", ""]
    if skip:
        lines += [f"Skipped (`--ginkgo.skip`): `{skip}`.", ""]
    lines += ["| spec | outcome | seconds |", "| --- | --- | --- |"]
    lines += [f"| {name} | {outcome} | {secs:.0f} |" for name, outcome, secs in specs]
    lines += ["", footer(f"{passed} of {len(specs)} specs passed", seconds)]
    return "\n".join(lines)


# --- npapi (go test -v) ---------------------------------------------------------------------

# "    --- PASS: TestConformanceProfiles/CNPAdminTierGress/Should_x (12.34s)"
RESULT = re.compile(r"^\s*--- (PASS|FAIL|SKIP): (\S+) \(([\d.]+)s\)")
RUN = re.compile(r"^=== (?:RUN|CONT|PAUSE|NAME)\s+(\S+)")
# doPokeServer's log line for a probe that did not give the expected result, with the place
# that logged it ("helper.go:71").
FAILED_COMMAND = re.compile(r"^\s*(\S+:\d+): FAILED Command was \[[^\]]*--protocol=(\w+)")
# testify's Eventually gave up: the probe it retried last is the one that failed the subtest.
GAVE_UP = "Condition never satisfied"


@dataclass
class GoTest:
    name: str  # the full slash-separated name
    outcome: str = "unfinished"  # PASS, FAIL, SKIP, unfinished
    seconds: float = 0.0
    # Every failed probe attempt, (logged at, protocol), and how many attempts had been logged
    # each time a retrying probe gave up.
    attempts: list[tuple[str, str]] = field(default_factory=list)
    gave_up_after: list[int] = field(default_factory=list)
    output: list[str] = field(default_factory=list)

    @property
    def failed_protocols(self) -> set[str]:
        """The protocols of the probes that failed the test, retries that later passed left out.

        A probe retried until it gives the expected result logs every failed attempt from one
        place; only the attempt just before a give-up failed the test. Attempts logged from any
        other place are probes that are not retried: each of them failed the test.
        """
        final = {self.attempts[n - 1] for n in self.gave_up_after if n > 0}
        retried_at = {where for where, _ in final}
        final |= {a for a in self.attempts if a[0] not in retried_at}
        return {protocol for _, protocol in final}

    @property
    def depth(self) -> int:
        return self.name.count("/")

    @property
    def failed_on_sctp_only(self) -> bool:
        return self.outcome == "FAIL" and self.failed_protocols == {"sctp"}


def parse_go_test(log: str) -> dict[str, GoTest]:
    """Tests by full name, in the order they started; each with the lines logged under it."""
    tests: dict[str, GoTest] = {}
    current: GoTest | None = None
    for line in log.splitlines():
        if m := RUN.match(line):
            current = tests.setdefault(m.group(1), GoTest(m.group(1)))
            continue
        if m := RESULT.match(line):
            test = tests.setdefault(m.group(2), GoTest(m.group(2)))
            test.outcome, test.seconds = m.group(1), float(m.group(3))
            continue
        if current is not None:
            current.output.append(line)
            if m := FAILED_COMMAND.search(line):
                current.attempts.append((m.group(1), m.group(2).lower()))
            elif GAVE_UP in line:
                current.gave_up_after.append(len(current.attempts))
    return tests


def outcome_text(test: GoTest) -> str:
    if test.failed_on_sctp_only:
        return "FAILED on SCTP only"
    return {"PASS": "passed", "FAIL": "FAILED", "SKIP": "skipped"}.get(test.outcome, test.outcome)


def npapi_junit(tests: dict[str, GoTest], path: Path) -> None:
    """One testsuite per conformance test, one testcase per subtest (or the test itself)."""
    root = ET.Element("testsuites", name="network-policy-api conformance")
    for test in (t for t in tests.values() if t.depth == 1):
        subtests = [t for t in tests.values() if t.name.startswith(test.name + "/")]
        suite = ET.SubElement(root, "testsuite", name=test.name, time=f"{test.seconds:.2f}")
        for case in subtests or [test]:
            element = ET.SubElement(
                suite, "testcase", name=case.name, classname=test.name, time=f"{case.seconds:.2f}"
            )
            if case.outcome == "FAIL":
                ET.SubElement(element, "failure", message=outcome_text(case)).text = "\n".join(
                    case.output
                )
            elif case.outcome == "SKIP":
                ET.SubElement(element, "skipped")
        suite.set("tests", str(len(subtests or [test])))
        suite.set("failures", str(sum(1 for c in subtests or [test] if c.outcome == "FAIL")))
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="unicode", xml_declaration=True)


def npapi_section(report_dir: Path, seconds: int, skip: str) -> str:
    log_path = report_dir / "npapi.log"
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    tests = parse_go_test(log)
    npapi_junit(tests, report_dir / "junit.xml")
    top = [t for t in tests.values() if t.depth == 1]
    lines = ["## network-policy-api conformance (profile ClusterNetworkPolicy)", ""]
    if skip:
        lines += [f"Not run (`-test.skip`): `{skip}`.", ""]
    lines += ["| test | outcome | subtests passed | seconds |", "| --- | --- | --- | --- |"]
    for test in top:
        subtests = [t for t in tests.values() if t.name.startswith(test.name + "/")]
        ok = sum(1 for t in subtests if t.outcome == "PASS")
        short = test.name.split("/", 1)[1]
        lines.append(
            f"| {short} | {outcome_text(test)} | {ok}/{len(subtests)} | {test.seconds:.0f} |"
        )
    failed_subtests = [t for t in tests.values() if t.depth >= 2 and t.outcome == "FAIL"]
    if failed_subtests:
        lines += ["", "Failed subtests:", ""]
        lines += [f"- `{t.name.split('/', 1)[1]}`: {outcome_text(t)}" for t in failed_subtests]
    passed = sum(1 for t in top if t.outcome == "PASS")
    skipped = sum(1 for t in top if t.outcome == "SKIP")
    sctp_only = sum(1 for t in failed_subtests if t.failed_on_sctp_only)
    counts = f"{passed} of {len(top)} tests passed ({skipped} skipped by the suite)"
    if not top:
        setup = tests.get("TestConformanceProfiles")
        counts = f"no test ran (TestConformanceProfiles: {setup.outcome if setup else 'absent'})"
    lines += [
        "",
        f"{len(failed_subtests)} subtests failed, {sctp_only} of them on SCTP probes only.",
        footer(counts, seconds),
    ]
    return "\n".join(lines)


# --- generator (cyclonus) -------------------------------------------------------------------

PROBE_COUNTS = re.compile(r"^(?:Discrepancy found:)?(\d+) wrong, (\d+) ignored, (\d+) correct$")


def _table_after(heading: str, log: str) -> list[str]:
    """The Markdown table cyclonus prints under ``heading`` (its rows start with "|")."""
    lines = log.splitlines()
    if heading not in lines:
        return []
    rows = []
    for line in lines[lines.index(heading) + 1 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def generator_section(report_dir: Path, seconds: int, include: str) -> str:
    cases: list[tuple[str, bool]] = []
    junit = report_dir / "junit.xml"
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            cases.append((case.get("name", ""), case.find("failure") is None))
    log_path = report_dir / "cyclonus.log"
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    wrong = ignored = correct = 0
    for line in log.splitlines():
        if m := PROBE_COUNTS.match(line.strip()):
            wrong, ignored, correct = (
                a + int(b) for a, b in zip((wrong, ignored, correct), m.groups(), strict=True)
            )
    tag_table = "\n".join(_table_after("Tag results:", log))
    passed = sum(1 for _, ok in cases if ok)
    lines = ["## Generated cases (cyclonus)", ""]
    if include:
        lines += [f"Cases: tags `{include}` (`--include`).", ""]
    lines += ["| case | outcome |", "| --- | --- |"]
    lines += [f"| {name} | {'passed' if ok else 'FAILED'} |" for name, ok in cases]
    rate = f" ({100 * passed / len(cases):.0f}%)" if cases else ""
    lines += [
        "",
        f"Probes over all steps and tries: {correct} as expected, {wrong} not, {ignored} ignored"
        " (loopback).",
    ]
    if tag_table:
        lines += ["", "cyclonus' own table by tag:", "", tag_table]
    lines += ["", footer(f"{passed} of {len(cases)} cases passed{rate}", seconds)]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] not in ("e2e", "npapi", "generator"):
        argv = ["e2e", *argv]  # the original form: DIR SECONDS
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("suite", choices=["e2e", "npapi", "generator"])
    parser.add_argument("report_dir", type=Path)
    parser.add_argument("seconds", type=int)
    parser.add_argument("--skip", default="", help="the skip pattern the suite ran with")
    parser.add_argument("--include", default="", help="cyclonus: the tags included")
    args = parser.parse_args(argv)
    if args.suite == "e2e":
        print(e2e_section(args.report_dir, args.seconds, args.skip))
    elif args.suite == "npapi":
        print(npapi_section(args.report_dir, args.seconds, args.skip))
    else:
        print(generator_section(args.report_dir, args.seconds, args.include))
    print()


if __name__ == "__main__":
    main(sys.argv[1:])
