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
        # every distribution it installs is one of its pins (torch==X fixes its own CUDA
        # runtime, nvidia-*, cuda-* and triton, where PyPI's Linux wheel brings them)
        if unpinned=$("$tmp/venv/bin/python" - "$tmp/report.json" "$tmp/requirements.txt" <<'PY'
import json, re, sys
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
pinned = {norm(line.split("==")[0]) for line in open(sys.argv[2]) if "==" in line}
found = {norm(i["metadata"]["name"]): i["metadata"]["version"]
         for i in json.load(open(sys.argv[1]))["install"]}
loose = sorted(f"{n}=={v}" for n, v in found.items() if n not in pinned
               and n != "setuptools" and not n.startswith(("nvidia-", "cuda-", "triton")))
print(" ".join(loose))
sys.exit(1 if loose else 0)
PY
        ); then
            echo "$env: python $have, $(wc -l <"$tmp/requirements.txt") pins resolve to themselves"
        else
            echo "$env: resolves, but installs what it does not pin: $unpinned" >&2
            status=1
        fi
    else
        echo "$env: does not resolve:" >&2
        grep -v "is ignored" "$tmp/err" | tail -20 >&2
        status=1
    fi
done
exit $status
