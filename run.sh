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

verb="${1:-}"
[ $# -gt 0 ] && shift
case "$verb" in
    main)
        setup
        exec "$PY" -m ssd_lib main "$@"
        ;;
    test)
        setup
        exec "$PY" -m pytest "$@"
        ;;
    setup)
        setup
        ;;
    *)
        echo "usage: bash run.sh main|test|setup [args...]" >&2
        exit 2
        ;;
esac
