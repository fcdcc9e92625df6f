#!/usr/bin/env python3
"""Judges an Autobahn TestSuite run from the reports kosoku wrote.

    autobahn_report.py OUT_DIR SIDE [-x PATTERN]...

OUT_DIR holds index.json, which is {agent: {case_id: {behavior, behaviorClose,
remoteCloseCode, duration, reportfile}}}; each case's own report (reportfile)
says why. SIDE ("server" or "client") names what was tested in the verdict.
PATTERN is a case id or `*` glob the run excluded, exactly as given to
kosoku's -x (repeatable).

The cases that should have run are kosoku's own case list (kosoku.cases.CASES,
from the installed package) less the excluded ones; the run fails unless every
agent ran exactly those case ids, and every case is OK or INFORMATIONAL both in
its behavior (NON-STRICT fails) and in its closing handshake (behaviorClose:
FAILED, WRONG CODE, UNCLEAN and the rest fail). Prints the counts and every
case that fails, and exits 1 if there is one. Used by
scripts/autobahn-server.sh and scripts/autobahn-client.sh.
"""

import argparse
import json
import os
import re
import sys
from collections import Counter
from importlib.metadata import version

import kosoku.cases

PASSING = {"OK", "INFORMATIONAL"}

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("out_dir")
parser.add_argument("side", choices=["server", "client"])
parser.add_argument("-x", "--exclude", action="append", default=[], metavar="PATTERN")
args = parser.parse_args()


def case_key(case_id):
    return [int(part) for part in case_id.split(".")]


def glob(pattern):
    """kosoku's case pattern: an id, where `*` stands for any run of characters."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")) + r"\Z")


def why(entry):
    try:
        with open(os.path.join(args.out_dir, entry["reportfile"])) as f:
            return json.load(f).get("result") or ""
    except (OSError, ValueError, KeyError):
        return ""


suite = list(kosoku.cases.CASES)
problems = []
excluded = set()
for pattern in args.exclude:
    matched = {case_id for case_id in suite if glob(pattern).match(case_id)}
    if not matched:
        problems.append(f"the excluded pattern {pattern!r} matches none of kosoku's cases")
    excluded |= matched
expected = set(suite) - excluded
print(
    f"expected: {len(expected)} cases, kosoku {version('kosoku')}'s {len(suite)} "
    f"less {len(excluded)} excluded ({', '.join(args.exclude) or 'none'})"
)

with open(os.path.join(args.out_dir, "index.json")) as f:
    index = json.load(f)
if not index:
    problems.append("index.json names no agent: no case ran")

behaviors, closes = Counter(), Counter()
failures = []
for agent, cases in index.items():
    label = f"{agent} " if len(index) > 1 else ""
    ran = set(cases)
    for what, ids in (("missing", expected - ran), ("not expected", ran - expected)):
        if ids:
            listed = sorted(ids, key=case_key)
            more = f" and {len(listed) - 20} more" if len(listed) > 20 else ""
            problems.append(f"{label}{len(ids)} cases {what}: {' '.join(listed[:20])}{more}")
    for case_id in sorted(cases, key=case_key):
        entry = cases[case_id]
        behavior, close = entry["behavior"], entry.get("behaviorClose", "(none)")
        behaviors[behavior] += 1
        closes[close] += 1
        if behavior not in PASSING or close not in PASSING:
            failures.append(
                f"  {label}{case_id:<8} {behavior:<14} close: {close}, "
                f"remote close code {entry.get('remoteCloseCode')}. {why(entry)}"
            )

total = sum(behaviors.values())
print(f"agent: {', '.join(index) or '(none)'}")
print(f"{total} cases by behavior:")
for behavior, count in behaviors.most_common():
    print(f"  {behavior:<14} {count}")
print("by closing-handshake behavior: " + ", ".join(f"{k} {v}" for k, v in closes.most_common()))

if failures:
    print(f"\n{len(failures)} cases are not OK or INFORMATIONAL in behavior and closing handshake:")
    print("\n".join(failures))
    problems.insert(0, f"{len(failures)} of {total} cases are not OK or INFORMATIONAL")
if problems:
    print(f"\nAutobahn {args.side} conformance FAILED: " + "; ".join(problems))
    print(f"details: {os.path.join(args.out_dir, 'index.html')}")
    sys.exit(1)
print(
    f"\nAutobahn {args.side} conformance passed: the {total} expected cases ran, "
    "each OK or INFORMATIONAL in behavior and closing handshake"
)
