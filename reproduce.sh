#!/usr/bin/env bash
# ssl3d — reproduce every notebook, or run the test suite. Bootstraps .venv on first use.
#
#   ./reproduce.sh                                   # all notebooks, smoke profile (CPU, embedded data) → figures/
#   ./reproduce.sh --profile full --data-root DIR    # the papers' settings (GPU + real datasets under DIR)
#   ./reproduce.sh --only 03_gmm_bottleneck          # one notebook (stem or NN prefix)
#   ./reproduce.sh --test [pytest args]              # every notebook under nbval, then the unit tests
#
# Executed notebooks land in runs/<profile>/; see README.md for the environment variables.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# shellcheck source=lib/env/bootstrap.sh
source lib/env/bootstrap.sh || { echo "reproduce.sh: environment bootstrap failed" >&2; exit 1; }

if [ "${1:-}" = "--test" ]; then
  shift
  # the browser test of the static site (tests/test_site.py) needs a headless Chromium: found, or apt-installed as
  # root; otherwise that test skips (and fails when CI is set)
  bash lib/env/install_browser.sh || echo "reproduce.sh: no Chromium — the site's browser test will skip" >&2
  if [ $# -gt 0 ]; then  # e.g. ./reproduce.sh --test tests/test_gmm.py -k mask
    exec python -m pytest --nbval-lax --nbval-current-env "$@"
  fi
  # notebooks first: conftest.py saves their executed copies to runs/smoke/, which tests/test_site.py renders
  exec python -m pytest notebooks tests --nbval-lax --nbval-current-env
fi
exec python -m ssl3d.reproduce "$@"
