#!/usr/bin/env bash
# Runs every test suite (dotnet and the Python client's pytest) and prints one closing line:
#   tests: N passed, N failed, N skipped
# Usage: ./test.sh            (TEST_FILTER=... passes a filter to dotnet test)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$root"
results="$root/artifacts/test-results"
rm -rf "$results"; mkdir -p "$results"

passed=0; failed=0; skipped=0; status=0

echo "== dotnet build"
if ! dotnet build Tatzelwurm.sln -c Debug --nologo -v q -clp:ErrorsOnly; then
  echo "tests: 0 passed, 1 failed, 0 skipped"
  exit 1
fi

echo "== dotnet test"
dotnet test --solution Tatzelwurm.sln --no-build -c Debug --report-xunit-trx --results-directory "$results/dotnet" 2>&1 | tee "$results/dotnet.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
# Count from the TRX reports (one per test project) so the numbers cover every project.
read -r p f s < <(python3 - "$results/dotnet" <<'PY'
import sys, pathlib, xml.etree.ElementTree as ET
p = f = s = 0
for trx in pathlib.Path(sys.argv[1]).rglob("*.trx"):
    c = ET.parse(trx).getroot().find(".//{*}Counters")
    if c is None: continue
    p += int(c.get("passed", 0)); f += int(c.get("failed", 0)) + int(c.get("error", 0)) + int(c.get("timeout", 0)) + int(c.get("aborted", 0))
    s += int(c.get("notExecuted", 0))
print(p, f, s)
PY
)
passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))

if [ -x clients/python/run_tests.sh ]; then
  echo "== pytest (clients/python)"
  clients/python/run_tests.sh "$results/pytest.xml"
  rc=$?
  # pytest exits 5 when it collected nothing; that is not a pass.
  [ $rc -eq 0 ] || status=1
  if [ -f "$results/pytest.xml" ]; then
    read -r p f s < <(python3 - "$results/pytest.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
suites = [r] if r.tag == "testsuite" else r.findall("testsuite")
t = sum(int(x.get("tests", 0)) for x in suites); fl = sum(int(x.get("failures", 0)) + int(x.get("errors", 0)) for x in suites)
sk = sum(int(x.get("skipped", 0)) for x in suites)
print(t - fl - sk, fl, sk)
PY
)
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
  else
    failed=$((failed + 1))
  fi
fi

[ "$failed" -eq 0 ] || status=1
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit $status
