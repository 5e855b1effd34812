#!/usr/bin/env bash
# Fail when nbdev-clean, nbdev-export (then ruff format) or the README build change a file: notebooks and library out of sync.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${VENV:-.venv}/bin
snapshot() { git ls-files -co --exclude-standard -- nbs llmops_kit README.md | sort | xargs -r sha256sum; }
before=$(snapshot)
"$bin/nbdev-clean"
"$bin/nbdev-export"
"$bin/ruff" format -q llmops_kit # the modules are nbdev's export, formatted
"$bin/jupyter" nbconvert --log-level=ERROR --to markdown --output-dir . --output README nbs/index.ipynb
after=$(snapshot)
if [ "$before" != "$after" ]; then
  echo "notebooks and library out of sync: nbdev-clean/nbdev-export/README build changed these files:" >&2
  diff <(echo "$before") <(echo "$after") | grep '^[<>]' | awk '{print "  " $3}' | sort -u >&2 || true
  echo "Edit the notebooks in nbs/ (never llmops_kit/ by hand), run 'make sync', and commit the result." >&2
  exit 1
fi
echo "notebooks, library and README in sync"
