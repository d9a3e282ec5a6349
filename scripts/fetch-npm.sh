#!/usr/bin/env bash
# Fetches pinned npm tarballs with `npm pack`, checks each against the sha512
# recorded in scripts/npm-pins.txt and unpacks it under $VILD_CACHE/npm/<name>.
# Re-running is a no-op once a package is unpacked and its stamp matches.
#   usage: scripts/fetch-npm.sh [NAME ...]   (default: every pinned package)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${VILD_CACHE:-$root/.cache}"
pins="$root/scripts/npm-pins.txt"
mkdir -p "$cache/npm/tarballs"

want=("$@")
fetch_one() {
  local spec="$1" integrity="$2"
  local name="${spec%@*}" dir="$cache/npm/${spec%@*}"
  local stamp="$dir/.vild-integrity"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$integrity" ]]; then
    return 0
  fi
  local safe="${name#@}"; safe="${safe//\//-}"
  local tgz
  tgz="$(ls "$cache/npm/tarballs/${safe}-${spec##*@}.tgz" 2>/dev/null || true)"
  if [[ -z "$tgz" ]]; then
    echo "fetch-npm: npm pack $spec" >&2
    (cd "$cache/npm/tarballs" && npm pack --silent "$spec" >/dev/null) || {
      echo "fetch-npm: npm pack $spec failed (is the npm registry reachable?)" >&2; return 1; }
    tgz="$cache/npm/tarballs/${safe}-${spec##*@}.tgz"
  fi
  [[ -f "$tgz" ]] || { echo "fetch-npm: $tgz missing after npm pack" >&2; return 1; }
  local got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
  if [[ "$got" != "$integrity" ]]; then
    echo "fetch-npm: integrity mismatch for $spec: want $integrity, got $got; deleting $tgz" >&2
    rm -f "$tgz"; return 1
  fi
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  tar -xzf "$tgz" -C "$dir.tmp" --strip-components=1 || {
    echo "fetch-npm: $tgz is corrupt (tar failed); deleting it" >&2; rm -f "$tgz"; rm -rf "$dir.tmp"; return 1; }
  rm -rf "$dir" && mkdir -p "$(dirname "$dir")" && mv "$dir.tmp" "$dir"
  echo "$integrity" > "$stamp"
  echo "fetch-npm: $spec ok -> $dir" >&2
}

while read -r spec integrity; do
  [[ -z "$spec" || "$spec" == \#* ]] && continue
  if (( ${#want[@]} )); then
    keep=0; for w in "${want[@]}"; do [[ "${spec%@*}" == "$w" ]] && keep=1; done
    (( keep )) || continue
  fi
  fetch_one "$spec" "$integrity"
done < "$pins"
