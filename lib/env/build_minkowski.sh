#!/usr/bin/env bash
# Build and install MinkowskiEngine 0.5.4 (CPU) into the Python environment first on PATH.
# Recipe measured on 2-core Debian 12 / Python 3.11 / torch 2.13.0 CPU: ~3 min, ~0.5 MB wheel.
# The wheel is cached in $SSL3D_WHEEL_CACHE (default ~/.cache/ssl3d/wheels) and reused on the next run.
# GPU users: see README ("MinkowskiEngine on CUDA") instead of this script.
set -euo pipefail

ME_VERSION=0.5.4
cache="${SSL3D_WHEEL_CACHE:-$HOME/.cache/ssl3d/wheels}"
py=python

if "$py" -c "import MinkowskiEngine" >/dev/null 2>&1; then
  exit 0
fi
tag=$("$py" -c 'import sys, torch; v = torch.__version__.split("+")[0]; print(f"cp{sys.version_info.major}{sys.version_info.minor}-torch{v}")')
mkdir -p "$cache/$tag"
# pip names the wheel in lower case (minkowskiengine-0.5.4-…); match either spelling.
wheel=$(find "$cache/$tag" -maxdepth 1 -iname "minkowskiengine-${ME_VERSION}-*.whl" | head -n1)
if [ -n "$wheel" ]; then
  echo "build_minkowski: installing cached $wheel"
  "$py" -m pip install --quiet --no-deps "$wheel"
  "$py" -c "import MinkowskiEngine" && exit 0
  echo "build_minkowski: cached wheel does not import; rebuilding" >&2
  rm -f "$wheel"
fi

# 1. OpenBLAS headers (MinkowskiEngine's CPU kernels call cblas).
if ! { [ -f /usr/include/x86_64-linux-gnu/cblas.h ] || [ -f /usr/include/cblas.h ] || \
       [ -f /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h ] || [ -f /usr/include/openblas/cblas.h ]; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "build_minkowski: installing libopenblas-dev with apt-get"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas-dev >/dev/null
  else
    echo "build_minkowski: OpenBLAS headers not found. Install them (Debian/Ubuntu: sudo apt-get install libopenblas-dev)" >&2
    exit 1
  fi
fi

# 2. The source release from the package index (no binary wheel exists).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "build_minkowski: fetching MinkowskiEngine==${ME_VERSION} source"
SETUPTOOLS_USE_DISTUTILS=stdlib "$py" -m pip download --quiet --no-deps --no-build-isolation \
  --no-binary :all: "MinkowskiEngine==${ME_VERSION}" -d "$work/sdist"
tar xzf "$work"/sdist/MinkowskiEngine-${ME_VERSION}.tar.gz -C "$work"
src="$work/MinkowskiEngine-${ME_VERSION}"

# 3. The only source fix for Python >= 3.10: Sequence moved to collections.abc (keep namedtuple).
for f in MinkowskiCommon.py MinkowskiCoordinateManager.py MinkowskiKernelGenerator.py MinkowskiTensorField.py \
         utils/quantization.py; do
  sed -i -e 's/^from collections import Sequence, namedtuple$/from collections import namedtuple\nfrom collections.abc import Sequence/' \
         -e 's/^from collections import Sequence$/from collections.abc import Sequence/' "$src/MinkowskiEngine/$f"
done

# 4. Build. setup.py calls 'pip uninstall', so the environment's bin/ must come first on PATH (it does when
#    this script is run through bootstrap.sh). -g0: 3 min and 0.5 MB instead of 9 min and 28 MB.
echo "build_minkowski: compiling (CPU only, ~3 min on 2 cores)"
MAX_JOBS="${MAX_JOBS:-$(nproc)}" CFLAGS="-g0" SETUPTOOLS_USE_DISTUTILS=stdlib \
  "$py" -m pip wheel --quiet --no-build-isolation --no-deps \
  -C--build-option=--cpu_only -C--build-option=--blas=openblas "$src" -w "$work/wheel" >"$work/build.log" 2>&1 || {
    tail -n 40 "$work/build.log" >&2
    echo "build_minkowski: build failed (log above). See README 'MinkowskiEngine' for the manual recipe." >&2
    exit 1
  }
cp "$work"/wheel/*.whl "$cache/$tag/"
"$py" -m pip install --quiet --no-deps "$work"/wheel/*.whl
"$py" -c "import MinkowskiEngine as ME; print('build_minkowski: MinkowskiEngine', ME.__version__, 'installed')"
