#!/usr/bin/env bash
# Re-fetch the JavaScript that the static course site ships (see README.md here): the exact files of two npm
# packages, unchanged, and their checksums. Needs npm and the registry; run it from anywhere:
#   bash ssd_lib/course/site_assets/fetch.sh
# Bump a version here and in ssd_lib/course/site.py together (tests/test_site.py checks they agree).
set -euo pipefail
HTML_MANAGER=1.0.15   # @jupyter-widgets/html-manager of ipywidgets 8.1 (controls ^5.0.13, base ^6.0.12)
REQUIREJS=2.3.8
here="$(cd "$(dirname "$0")" && pwd)"
PY="${PYTHON:-$here/../../../.venv/bin/python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "@jupyter-widgets/html-manager@$HTML_MANAGER" "requirejs@$REQUIREJS" >/dev/null
mkdir hm rq
tar xzf "jupyter-widgets-html-manager-$HTML_MANAGER.tgz" -C hm
tar xzf "requirejs-$REQUIREJS.tgz" -C rq
rm -rf "$here/html-manager" "$here/requirejs"
mkdir -p "$here/html-manager" "$here/requirejs"
# The AMD embed script (nbconvert's widget renderer), its package.json and third-party notices, and Font Awesome 5's
# three .woff2 fonts; the .eot/.ttf/.svg/.woff copies of those fonts (fallbacks for old browsers) are left out.
cp hm/package/dist/embed-amd.js hm/package/dist/embed.js.LICENSE.txt hm/package/package.json hm/package/dist/*.woff2 \
   "$here/html-manager/"
# The npm package has no LICENSE file: ipywidgets' own (the same repository, BSD-3-Clause) from its installed wheel.
cp "$("$PY" -c 'import importlib.metadata as m; d = m.distribution("ipywidgets"); print(next(d.locate_file(f) for f in d.files if f.name == "LICENSE"))')" \
   "$here/html-manager/LICENSE"
# require.js (the browser loader; its MIT licence is in its header), the package's package.json and README.
cp rq/package/require.js rq/package/package.json rq/package/README.md "$here/requirejs/"
cd "$here"
sha256sum html-manager/* requirejs/* > SHA256SUMS
echo "fetched @jupyter-widgets/html-manager@$HTML_MANAGER and requirejs@$REQUIREJS into $here"
