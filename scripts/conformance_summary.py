"""Summarises the e2e suite's JUnit XML (`junit_01.xml` in a report dir) as a Markdown table:
one row per spec with its outcome, then the totals, the machine and the date."""

from __future__ import annotations

import datetime
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def main(report_dir: str, seconds: str) -> None:
    rows = []
    for path in sorted(Path(report_dir).glob("junit*.xml")):
        for case in ET.parse(path).getroot().iter("testcase"):
            if case.find("skipped") is not None:
                continue
            failed = case.find("failure") is not None or case.find("error") is not None
            name = case.get("name", "").replace("[It] ", "")
            rows.append((name, "FAILED" if failed else "passed", float(case.get("time", 0))))
    specs = [r for r in rows if "Netpol" in r[0] or "NetworkPolicy" in r[0]]
    passed = sum(1 for r in specs if r[1] == "passed")
    print("| spec | outcome | seconds |\n| --- | --- | --- |")
    for name, outcome, secs in specs:
        print(f"| {name} | {outcome} | {secs:.0f} |")
    print(
        f"\n{passed} of {len(specs)} specs passed in {int(seconds)} s on "
        f"{os.cpu_count()} cores, {datetime.datetime.now(datetime.UTC):%Y-%m-%d}."
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
