#!/usr/bin/env bash
# Runs one of the three programs from a clean clone: builds it (Release) on first use or when a
# source file is newer than the build, then executes it with the given arguments.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
project=$1; assembly=$2; shift 2
dll="$root/artifacts/bin/$project/release/$assembly.dll"

stale() {
  [ ! -f "$dll" ] || [ -n "$(find "$root/src" "$root"/Directory.*.props -newer "$dll" -type f \
    \( -name '*.cs' -o -name '*.csproj' -o -name '*.props' -o -name '*.html' -o -name '*.js' -o -name '*.css' \) -print -quit 2>/dev/null)" ]
}

if stale; then
  # Several programs may start at once on a fresh clone: build one at a time.
  mkdir -p "$root/artifacts"
  exec 9>"$root/artifacts/.build.lock"
  flock 9
  if stale; then
    echo "building $assembly (first run or sources changed)…" >&2
    dotnet build "$root/src/$project/$project.csproj" -c Release --nologo -v q "-clp:ErrorsOnly;NoSummary" >&2
    touch "$dll"
  fi
  flock -u 9
fi
exec dotnet "$dll" "$@"
