#!/usr/bin/env bash
# The browser test's npm dependencies (playwright-core only, pinned by
# web/e2e/package-lock.json). No browser is downloaded: the test drives
# Debian's /usr/bin/chromium (installed by 10-debian.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="$root/web/e2e"
stamp="$dir/node_modules/.vild-lock"
if [[ -f "$stamp" ]] && cmp -s "$dir/package-lock.json" "$stamp"; then
  exit 0
fi
echo "setup: npm ci in web/e2e" >&2
(cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
cp "$dir/package-lock.json" "$stamp"
