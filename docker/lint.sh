#!/usr/bin/env bash
# The Dockerfile checks of `make lint`: hadolint, then checkov's Dockerfile policies; any
# finding fails. A skipped checkov policy is a `# checkov:skip=ID: reason` line in the file.
#
# checkov pins networkx<2.7, which requirements.lock cannot share, so it runs from its own
# virtual environment, .venv-checkov, installed with --require-hashes from
# docker/requirements-checkov.lock and rebuilt whenever that lock changes.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
CHECKOV_VENV=.venv-checkov
CHECKOV_LOCK=docker/requirements-checkov.lock
DOCKERFILES=(docker/client.Dockerfile docker/server.Dockerfile)

"$VENV/bin/hadolint" "${DOCKERFILES[@]}"

wanted=$(sha256sum "$CHECKOV_LOCK" | cut -d' ' -f1)
if [[ "$(cat "$CHECKOV_VENV/.lock-sha256" 2>/dev/null)" != "$wanted" ]]; then
  echo "installing checkov into $CHECKOV_VENV from $CHECKOV_LOCK"
  rm -rf "$CHECKOV_VENV"
  "$VENV/bin/python" -m venv "$CHECKOV_VENV"
  "$CHECKOV_VENV/bin/python" -m pip install -q --disable-pip-version-check \
    --require-hashes --no-deps -r "$CHECKOV_LOCK"
  echo "$wanted" > "$CHECKOV_VENV/.lock-sha256"
fi

files=()
for dockerfile in "${DOCKERFILES[@]}"; do files+=(--file "$dockerfile"); done
# offline: no policy metadata download, no version check
BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false \
  "$CHECKOV_VENV/bin/checkov" --framework dockerfile --skip-download --compact --quiet \
  "${files[@]}"
