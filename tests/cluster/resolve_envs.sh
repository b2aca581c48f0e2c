#!/usr/bin/env bash
# Resolve the pip section of every conda env (envs/*.yaml) with pip, in a fresh venv
# of the env's Python: as far as a machine without conda channels can check the envs
# (tests/test_envs.py checks, offline, that they pin what each rule imports).
#
#   tests/cluster/resolve_envs.sh        # PYTHON=python3.11 to choose the interpreter
#
# Needs PyPI (metadata only: `pip install --dry-run` installs nothing). Not part of .ci/run.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m venv "$tmp/venv"
have=$("$tmp/venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
status=0
for env in envs/*.yaml; do
    want=$(sed -n 's/^ *- python=\([0-9.]*\)$/\1/p' "$env")
    if [[ "$want" != "$have" ]]; then
        echo "$env: pins python=$want, this check runs $have; set PYTHON" >&2
        status=1
        continue
    fi
    # the lines under `- pip:` (each `- name==version`)
    sed -n '/^ *- pip:$/,$ s/^ \{6,\}- \(.*\)$/\1/p' "$env" >"$tmp/requirements.txt"
    if "$tmp/venv/bin/pip" install --dry-run --ignore-installed --quiet --report "$tmp/report.json" \
        -r "$tmp/requirements.txt" 2>"$tmp/err"; then
        n=$("$tmp/venv/bin/python" -c "import json,sys; print(len(json.load(open(sys.argv[1]))['install']))" "$tmp/report.json")
        echo "$env: python $have, $(wc -l <"$tmp/requirements.txt") pins resolve ($n distributions)"
    else
        echo "$env: does not resolve:" >&2
        grep -v "is ignored" "$tmp/err" | tail -20 >&2
        status=1
    fi
done
exit $status
