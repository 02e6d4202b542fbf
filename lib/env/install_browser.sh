#!/usr/bin/env bash
# Make sure a headless Chromium is there for the browser tests of the static site (tests/test_site.py,
# `python -m ssl3d.site --check`). Uses Debian's `chromium` package: no browser download, no driver binary.
#
#   bash lib/env/install_browser.sh      # quick no-op when a Chromium is found; as root, apt-get installs it
#
# Found = $SSL3D_CHROMIUM, or chromium / chromium-browser / google-chrome on PATH (what ssl3d.site.find_chromium
# looks for). Otherwise, as root with apt-get: installs `chromium` (+ DejaVu fonts) — ~1.5 min, ~300 MB.
# Otherwise prints what to do and exits 1; the browser tests then skip (and fail under CI, where CI is set).
set -euo pipefail

find_chromium() {
  if [ -n "${SSL3D_CHROMIUM:-}" ]; then
    [ -x "$SSL3D_CHROMIUM" ] && { echo "$SSL3D_CHROMIUM"; return 0; }
    echo "install_browser: SSL3D_CHROMIUM=$SSL3D_CHROMIUM is not an executable file" >&2
    return 1
  fi
  local b
  for b in chromium chromium-browser google-chrome google-chrome-stable; do
    command -v "$b" 2>/dev/null && return 0
  done
  return 1
}

if find_chromium >/dev/null; then
  exit 0
elif [ -n "${SSL3D_CHROMIUM:-}" ]; then
  exit 1  # a wrong SSL3D_CHROMIUM is the user's choice to fix, not a reason to install another browser
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "install_browser: installing Debian's chromium with apt-get (first time: ~1.5 min)"
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium fonts-dejavu-core; } >"$log" 2>&1 || {
    tail -n 20 "$log" >&2; echo "install_browser: apt-get failed (output above)" >&2; exit 1; }
  bin=$(find_chromium) || { echo "install_browser: apt-get installed chromium but no chromium is on PATH" >&2; exit 1; }
  # The Debian launcher script prints a harmless '[: …: unexpected operator' on some machines; hide it.
  echo "install_browser: $("$bin" --version 2>/dev/null) at $bin"
  exit 0
fi

cat >&2 <<'EOF'
install_browser: no Chromium found, and this is not root with apt-get, so nothing was installed.
  Debian/Ubuntu:  sudo apt-get install --no-install-recommends chromium   (Ubuntu: chromium-browser)
  elsewhere:      install Chrome/Chromium and set SSL3D_CHROMIUM=/path/to/the/binary
Without it the browser tests of the static site (tests/test_site.py) skip; under CI they fail.
EOF
exit 1
