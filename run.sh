#!/usr/bin/env bash
# The course's two entry points (see README):
#   bash run.sh main   set up .venv and run the main job
#   bash run.sh test   set up .venv and run the whole test suite
# Anything after the verb is passed on (to the main job or to pytest).
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PY="$VENV/bin/python"

setup() {
    if [ ! -x "$PY" ]; then
        python3 -m venv "$VENV"
    fi
    # Re-install only when pyproject.toml changed since the last successful set-up.
    local stamp="$VENV/.ssd_lib-setup"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        "$PY" -m pip install -q --upgrade pip
        "$PY" -m pip install -q -e ".[course,test]"
        touch "$stamp"
    fi
}

# The browser test (pytest -m browser) drives Debian's chromium with Playwright; Playwright's own
# browser download is not used. Installed once, as root or with passwordless sudo; otherwise the
# test skips and says why (and with CI=true the suite fails at its start, naming what is missing:
# tests/conftest.py).
no_chromium() {
    echo "run.sh: chromium is not installed and $1; the browser tests will skip (with CI=true: fail)" >&2
}
setup_chromium() {
    command -v chromium >/dev/null 2>&1 && return 0
    [ -n "${SSD_CHROMIUM:-}" ] && return 0
    command -v apt-get >/dev/null 2>&1 || { no_chromium "there is no apt-get to install it"; return 0; }
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -qq)
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null \
            || { no_chromium "installing it needs root or passwordless sudo"; return 0; }
        apt=(sudo -n "${apt[@]}")
    fi
    echo "run.sh: installing chromium for the browser test (apt-get)" >&2
    if ! "${apt[@]}" install --no-install-recommends chromium >/dev/null 2>&1; then
        "${apt[@]}" update >/dev/null 2>&1 || true
        "${apt[@]}" install --no-install-recommends chromium >/dev/null 2>&1 \
            || no_chromium "apt-get could not install it"
    fi
}

verb="${1:-}"
[ $# -gt 0 ] && shift
case "$verb" in
    main)
        setup
        exec "$PY" -m ssd_lib main "$@"
        ;;
    test)
        setup
        setup_chromium  # only the test suite needs a browser
        exec "$PY" -m pytest "$@"
        ;;
    setup)
        setup
        setup_chromium
        ;;
    *)
        echo "usage: bash run.sh main|test|setup [args...]" >&2
        exit 2
        ;;
esac
