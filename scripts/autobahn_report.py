#!/usr/bin/env python3
"""Judges an Autobahn TestSuite run from the reports kosoku wrote.

    autobahn_report.py OUT_DIR EXPECTED_CASES SIDE

OUT_DIR holds index.json, which is {agent: {case_id: {behavior, behaviorClose,
remoteCloseCode, duration, reportfile}}}; each case's own report (reportfile)
says why. SIDE ("server" or "client") names what was tested in the verdict.
Prints the counts by behavior and every case that is neither OK nor
INFORMATIONAL (NON-STRICT included), and exits 1 if there is one, or if fewer
than EXPECTED_CASES cases ran. Used by scripts/autobahn-server.sh and
scripts/autobahn-client.sh.
"""

import json
import os
import sys
from collections import Counter

out_dir, expected, side = sys.argv[1], int(sys.argv[2]), sys.argv[3]
PASSING = {"OK", "INFORMATIONAL"}

with open(os.path.join(out_dir, "index.json")) as f:
    index = json.load(f)


def case_key(case_id):
    return [int(part) for part in case_id.split(".")]


def why(entry):
    try:
        with open(os.path.join(out_dir, entry["reportfile"])) as f:
            return json.load(f).get("result") or ""
    except (OSError, ValueError, KeyError):
        return ""


behaviors, closes = Counter(), Counter()
failures, close_warnings = [], []
for agent, cases in index.items():
    label = f"{agent} " if len(index) > 1 else ""
    for case_id in sorted(cases, key=case_key):
        entry = cases[case_id]
        behavior, close = entry["behavior"], entry.get("behaviorClose", "?")
        behaviors[behavior] += 1
        closes[close] += 1
        line = (
            f"  {label}{case_id:<8} {behavior:<14} close: {close}, "
            f"remote close code {entry.get('remoteCloseCode')}. {why(entry)}"
        )
        if behavior not in PASSING:
            failures.append(line)
        elif close not in PASSING:
            close_warnings.append(line)

total = sum(behaviors.values())
print(f"agent: {', '.join(index) or '(none)'}")
print(f"{total} cases by behavior:")
for behavior, count in behaviors.most_common():
    print(f"  {behavior:<14} {count}")
print("by closing-handshake behavior: " + ", ".join(f"{k} {v}" for k, v in closes.most_common()))

if failures:
    print(f"\n{len(failures)} cases are neither OK nor INFORMATIONAL:")
    print("\n".join(failures))
if close_warnings:
    print(f"\nnote: {len(close_warnings)} passing cases have an odd closing handshake:")
    print("\n".join(close_warnings))

problems = []
if failures:
    problems.append(f"{len(failures)} of {total} cases are not OK or INFORMATIONAL")
if total < expected:
    problems.append(f"only {total} cases ran, expected at least {expected}")
if problems:
    print(f"\nAutobahn {side} conformance FAILED: " + "; ".join(problems))
    print(f"details: {os.path.join(out_dir, 'index.html')}")
    sys.exit(1)
print(f"\nAutobahn {side} conformance passed: all {total} cases OK or INFORMATIONAL")
