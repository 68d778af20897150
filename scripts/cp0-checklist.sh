#!/usr/bin/env bash
# Runs the workspace's tests, then prints the CP0 validation checklist with a result column per
# backend: each item of scripts/cp0-checklist.txt names the tests that prove it, and is green only
# when every one of them ran and passed on SQLite and, when AIGENTFLOW_PG_URL is set, on
# PostgreSQL too. Exits non-zero when a test fails or a mapped test did not run.
#
#   scripts/cp0-checklist.sh                  run the tests, then print the checklist
#   scripts/cp0-checklist.sh --from-log FILE [CHECKLIST]
#                                             print the checklist (default
#                                             scripts/cp0-checklist.txt) of a saved `cargo test`
#                                             output or a nextest JUnit file
#
# The tests run under cargo-nextest (profile `cp0` of .config/nextest.toml: the test binaries side
# by side, each test in its own process), then `cargo test --doc` for the examples in the docs;
# without cargo-nextest, under `cargo test`, one test binary at a time (slower).
#
# A mapped name is a test's name as `cargo test` prints it, or the base name of a test that runs
# on both backends (`on_both!` prints NAME::sqlite and NAME::postgres): then each variant is
# judged in its own column. A name printed as a plain test counts for SQLite (PostgreSQL shows
# "–"), unless it contains `postgres`: then it counts for PostgreSQL (SQLite shows "–"). Without
# AIGENTFLOW_PG_URL the PostgreSQL variants skip themselves, so that column says "not run" (not a
# failure; .ci/run sets the URL and AIGENTFLOW_REQUIRE_PG=1, which makes a missing URL fail inside
# the tests).
set -uo pipefail

usage="usage: $0 [--from-log FILE [CHECKLIST]]"
checklist=scripts/cp0-checklist.txt
if [[ "${1:-}" == "--from-log" ]]; then
  [[ $# -ge 2 && $# -le 3 && -r "$2" && ( $# -eq 2 || -r "$3" ) ]] || { echo "$usage" >&2; exit 2; }
  # Named from where the script was called, before it moves to the repository's root.
  logs=("$(readlink -f "$2")")
  [[ $# -eq 3 ]] && checklist=$(readlink -f "$3")
  test_status=0
  cd "$(dirname "$0")/.."
else
  [[ $# -eq 0 ]] || { echo "$usage" >&2; exit 2; }
  cd "$(dirname "$0")/.."
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  if cargo nextest --version >/dev/null 2>&1; then
    junit="$(cargo metadata --format-version 1 --no-deps --offline \
      | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/nextest/cp0/junit.xml"
    rm -f "$junit"
    cargo nextest run --workspace --profile cp0 2>&1 | tee "$log"
    test_status=${PIPESTATUS[0]}
    cargo test --workspace --doc 2>&1 | tee -a "$log"
    [[ ${PIPESTATUS[0]} -eq 0 ]] || test_status=1
    logs=("$log")
    # A run that stopped before any test (a build error) writes no JUnit file: the log says why.
    [[ -r "$junit" ]] && logs+=("$junit")
  else
    echo "cargo-nextest not found: running cargo test, one test binary at a time"
    cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
    test_status=${PIPESTATUS[0]}
    logs=("$log")
  fi
fi

python3 - "$checklist" "${logs[@]}" <<'PY'
import os, re, sys
import xml.etree.ElementTree as ET
checklist, logs = sys.argv[1], sys.argv[2:]
pg_set = bool(os.environ.get("AIGENTFLOW_PG_URL"))
results = {}

def record(name, status):
    # a name run in two binaries counts as passed only if it passed everywhere
    results[name] = status if results.get(name, "ok") == "ok" else results[name]

def read_junit(path):
    """A nextest JUnit file: a test case failed if it holds a failure or an error."""
    for case in ET.parse(path).getroot().iter("testcase"):
        tags = {child.tag for child in case}
        if tags & {"failure", "error"}:
            record(case.get("name"), "FAILED")
        elif "skipped" in tags:
            record(case.get("name"), "ignored")
        else:
            record(case.get("name"), "ok")

text_logs = []
for path in logs:
    with open(path, "rb") as f:
        head = f.read(512).lstrip()
    if head.startswith(b"<?xml") or head.startswith(b"<testsuites"):
        read_junit(path)
        continue
    text_logs.append(path)
    for line in open(path, encoding="utf-8", errors="replace"):
        m = re.match(r"^test (\S+) \.\.\. (ok|FAILED|ignored)", line)
        if m:
            record(*m.groups())

def sides(test):
    """The result names that prove `test` on SQLite and on PostgreSQL (None: not applicable)."""
    if f"{test}::sqlite" in results or f"{test}::postgres" in results:
        return f"{test}::sqlite", f"{test}::postgres"
    if "postgres" in test:
        return None, test
    return test, None

tty = sys.stdout.isatty()
def paint(text, colour):
    return f"\033[{colour}m{text}\033[0m" if tty else text
GREEN, RED, GREY = "32", "31", "90"
WIDTH = 12

def column(names, ran=True):
    """The cell of one backend, and its failed and missing tests."""
    failed = [n for n in names if results.get(n) not in (None, "ok")]
    missing = [n for n in names if n not in results]
    if not names:
        cell, colour = "–", GREY
    elif failed or missing:
        cell, colour = f"✗ {len(failed) + len(missing)}/{len(names)}", RED
    elif not ran:
        cell, colour = "not run", GREY
    else:
        cell, colour = f"✓ {len(names)}", GREEN
    return paint(cell.ljust(WIDTH), colour), failed, missing

bad = 0
print("\nCP0 validation checklist")
header = f"    {'SQLite'.ljust(WIDTH)}PostgreSQL"
for raw in open(checklist, encoding="utf-8"):
    line = raw.strip()
    if not line or line.startswith("#"):
        continue
    if line.startswith("["):
        print(f"\n{line.strip('[]')}\n{header}")
        continue
    item, _, tests = line.partition("|")
    item, tests = item.strip(), [t.strip() for t in tests.split(",") if t.strip()]
    if not tests:
        print(f"  ○ {'–'.ljust(WIDTH)}{'–'.ljust(WIDTH)}{item}  (not built yet)")
        continue
    pairs = [sides(t) for t in tests]
    sqlite_cell, sqlite_failed, sqlite_missing = column([s for s, _ in pairs if s])
    pg_cell, pg_failed, pg_missing = column([p for _, p in pairs if p], ran=pg_set)
    failed, missing = sqlite_failed + pg_failed, sqlite_missing + pg_missing
    if failed or missing:
        bad += 1
        mark = paint("✗", RED)
    elif not pg_set and all(s is None for s, _ in pairs):
        mark = paint("○", GREY)  # proven on PostgreSQL only, which did not run
    else:
        mark = paint("✓", GREEN)
    print(f"  {mark} {sqlite_cell}{pg_cell}{item}")
    for t in failed:
        print(f"      failed: {t}")
    for t in missing:
        print(f"      did not run: {t}")
if not pg_set:
    print("\nPostgreSQL column not run: AIGENTFLOW_PG_URL is not set (see README.md, Tests)")

# When a run fails, its cause is far above in the log: repeat the lines that say why (a build
# error and where it is, a full disk, a panic, the failing tests), so that the end of the output,
# which may be all a reader gets to see, names it.
why = []
lines = [l for p in text_logs for l in open(p, encoding="utf-8", errors="replace").read().splitlines()]
for i, text in enumerate(lines):
    if re.match(r"^error(\[E\d+\])?: ", text) or "No space left" in text or "panicked at" in text:
        why.append(text)
        if i + 1 < len(lines) and lines[i + 1].lstrip().startswith("-->"):
            why.append(lines[i + 1])
    elif re.match(r"^test \S+ \.\.\. FAILED", text) or re.match(r"^\s*(FAIL|SIG\w+|TIMEOUT|ABORT) \[", text):
        why.append(text)
if why:
    print("\nWhy the run failed (the first of these lines; the whole log is above):")
    for text in why[:40]:
        print(f"  {text[:300]}")
sys.exit(1 if bad else 0)
PY
check_status=$?
if [ "$test_status" -ne 0 ] || [ "$check_status" -ne 0 ]; then
  echo "CP0 validation failed" >&2
  exit 1
fi
echo "CP0 validation passed"
