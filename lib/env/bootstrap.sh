# shellcheck shell=bash
# Source from the repository root:  source lib/env/bootstrap.sh
# Creates (or reuses) the project's virtual environment, installs the pinned CPU stack and ssl3d in editable
# mode, builds (or reuses a cached build of) MinkowskiEngine, then activates the environment.
#
# Environment variables:
#   SSL3D_VENV       where the environment lives            (default: .venv)
#   SSL3D_PYTHON     interpreter used to create it          (default: python3.11, else python3)
#   SSL3D_MINKOWSKI  auto = build/install MinkowskiEngine, warn and go on with the pure-torch sparse backend
#                    if that fails (default); 1 = required (fail if it cannot be built); 0 = skip
#   SSL3D_REQUIREMENTS  pinned requirements file            (default: lib/env/requirements-cpu.txt)

_ssl3d_bootstrap() {
  local venv="${SSL3D_VENV:-.venv}"
  local req="${SSL3D_REQUIREMENTS:-lib/env/requirements-cpu.txt}"
  local py="${SSL3D_PYTHON:-}"
  if [ -z "$py" ]; then
    if command -v python3.11 >/dev/null 2>&1; then py=python3.11; else py=python3; fi
  fi
  if [ ! -f "$req" ]; then
    echo "bootstrap: $req not found — run this from the ssl3d repository root." >&2; return 1
  fi
  if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 10) else 1)' 2>/dev/null; then
    echo "bootstrap: '$py' is missing or older than Python 3.10; set SSL3D_PYTHON=/path/to/python3.11." >&2
    return 1
  fi
  if [ ! -x "$venv/bin/python" ]; then
    echo "bootstrap: creating $venv with $($py --version 2>&1)"
    "$py" -m venv "$venv" || { echo "bootstrap: 'python -m venv' failed (Debian: apt-get install python3-venv)." >&2; return 1; }
  fi
  # Reinstall only when the pins or the package metadata changed.
  local want have stamp="$venv/.ssl3d-installed"
  local nodeps="${SSL3D_REQUIREMENTS_NODEPS:-lib/env/requirements-nodeps.txt}"
  want=$(cat "$req" "$nodeps" pyproject.toml 2>/dev/null | sha256sum | cut -d' ' -f1)
  have=$(cat "$stamp" 2>/dev/null || true)
  if [ "$want" != "$have" ]; then
    echo "bootstrap: installing pinned requirements into $venv (first run: ~2 min)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "pip==26.3" || return 1
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" || {
      echo "bootstrap: pip could not install $req (see the error above)." >&2; return 1; }
    if [ -f "$nodeps" ]; then
      "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$nodeps" || {
        echo "bootstrap: pip could not install $nodeps (see the error above)." >&2; return 1; }
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . || return 1
    echo "$want" > "$stamp"
  fi
  case "${SSL3D_MINKOWSKI:-auto}" in
    1) PATH="$PWD/$venv/bin:$PATH" bash lib/env/build_minkowski.sh || return 1 ;;
    auto) PATH="$PWD/$venv/bin:$PATH" bash lib/env/build_minkowski.sh || echo "bootstrap: WARNING — MinkowskiEngine \
could not be built (see above); ssl3d.sparse falls back to its pure-PyTorch backend. SSL3D_MINKOWSKI=0 skips this \
step; SSL3D_MINKOWSKI=1 makes it an error." >&2 ;;
    0) ;;
    *) echo "bootstrap: SSL3D_MINKOWSKI must be auto, 0 or 1 (got '${SSL3D_MINKOWSKI}')" >&2; return 1 ;;
  esac
  # shellcheck disable=SC1091
  . "$venv/bin/activate"
}
_ssl3d_bootstrap
