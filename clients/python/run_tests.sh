#!/usr/bin/env bash
# Runs the Python client's test suite against a real coordinator (started by the fixtures on
# 127.0.0.1:0; it must already be built: dotnet build Tatzelwurm.sln).
# Usage: clients/python/run_tests.sh [JUNIT_XML_PATH] [extra pytest args...]
# Needs Debian's interpreter and packages: apt-get install -y python3-msgpack python3-pytest \
#   python3-pytest-asyncio python3-yaml   (python3-yaml is optional: without it the default
#   communicator encoder is MessagePack instead of YAML)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
junit=()
if [ $# -ge 1 ] && [ -n "$1" ]; then
  mkdir -p "$(dirname "$1")"
  junit=(--junitxml "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")")
  shift
fi
cd "$here"
exec /usr/bin/python3 -m pytest -p no:cacheprovider -q "${junit[@]}" "$@"   # testpaths: tests
