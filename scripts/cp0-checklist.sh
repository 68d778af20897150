#!/usr/bin/env bash
# Runs `cargo test --workspace`, then prints the CP0 validation checklist: each item is green only
# when every test mapped to it (scripts/cp0-checklist.txt) ran and passed. Exits non-zero when a
# test fails or a mapped test did not run.
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT

cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
test_status=${PIPESTATUS[0]}

python3 - "$log" scripts/cp0-checklist.txt <<'PY'
import re, sys
log, checklist = sys.argv[1], sys.argv[2]
results = {}
for line in open(log, encoding="utf-8", errors="replace"):
    m = re.match(r"^test (\S+) \.\.\. (ok|FAILED|ignored)", line)
    if m:
        name, status = m.groups()
        # a name run in two binaries counts as passed only if it passed everywhere
        results[name] = status if results.get(name, "ok") == "ok" else results[name]
green = "\033[32m" if sys.stdout.isatty() else ""
red = "\033[31m" if sys.stdout.isatty() else ""
reset = "\033[0m" if sys.stdout.isatty() else ""
bad = 0
section = None
print("\nCP0 validation checklist")
for raw in open(checklist, encoding="utf-8"):
    line = raw.strip()
    if not line or line.startswith("#"):
        continue
    if line.startswith("["):
        section = line.strip("[]")
        print(f"\n{section}")
        continue
    item, _, tests = line.partition("|")
    item, tests = item.strip(), [t.strip() for t in tests.split(",") if t.strip()]
    if not tests:
        print(f"  ○ {item}  (not built yet)")
        continue
    missing = [t for t in tests if t not in results]
    failed = [t for t in tests if results.get(t) not in (None, "ok")]
    if missing or failed:
        bad += 1
        print(f"  {red}✗ {item}{reset}")
        for t in failed:
            print(f"      failed: {t}")
        for t in missing:
            print(f"      did not run: {t}")
    else:
        print(f"  {green}✓ {item}{reset}  ({len(tests)} tests)")
sys.exit(1 if bad else 0)
PY
check_status=$?
if [ "$test_status" -ne 0 ] || [ "$check_status" -ne 0 ]; then
  echo "CP0 validation failed" >&2
  exit 1
fi
echo "CP0 validation passed"
