#!/usr/bin/env bash
# Render both example prompt files with the embedded model, into renders/ (or the folder given as $1).
# Run it again after an interruption: finished videos are skipped, the rest is rendered.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-renders}"

render() {  # render FILE DIR: exit code 3 (some items failed) is reported; anything else stops the script
  local status=0
  sora batch "$1" --out-dir "$2" --seconds 2 || status=$?
  case "$status" in
    0) ;;
    3) echo "render.sh: some items of $1 failed; their errors are in $2/manifest.jsonl:" >&2
       grep '"status": "failed"' "$2/manifest.jsonl" >&2 || true ;;
    *) exit "$status" ;;
  esac
}

for kind in txt jsonl; do  # check every line of both files first: a bad line stops the script before any rendering
  sora batch "$here/prompts.$kind" --out-dir "$out/$kind" --dry-run --quiet > /dev/null
done
for kind in txt jsonl; do
  render "$here/prompts.$kind" "$out/$kind"
done
