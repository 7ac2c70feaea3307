#!/usr/bin/env bash
# Fail when `nbdev-export` or `nbdev-clean` would change the tree: notebooks and library out of
# sync, or notebooks not clean. Works on a copy so that the checkout itself is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin=${NBDEV_BIN:-$root/.venv/bin}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git ls-files -z | xargs -0 -I{} cp --parents {} "$tmp"
cd "$tmp" && git init -q && git add -A && git -c user.email=ci@x -c user.name=ci commit -qm base
"$bin/nbdev-export"
"$bin/nbdev-clean"
if [ -n "$(git status --porcelain)" ]; then
  echo "FAIL: nbdev-export / nbdev-clean change these files; run them and commit the result:" >&2
  git status --porcelain >&2
  git --no-pager diff --stat >&2
  exit 1
fi
echo "sync-check: notebooks and segcook/ are in sync and clean"
