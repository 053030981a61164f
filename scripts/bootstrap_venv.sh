#!/usr/bin/env bash
# Make ./.venv point at a virtual environment built from requirements.lock.
#
# The environment (~6 GB: torch is a CUDA build) is built once per lock-file hash in a
# shared cache outside the clone and linked as ./.venv, so fresh clones (CI starts from
# one every time) reuse it instead of filling the disk. A real ./.venv directory made by
# the user is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ -d .venv ] && [ ! -L .venv ]; then
    exit 0
fi
key=$( { cat requirements.lock; "$python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)
cache=${SCALSELECT_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scalselect/venvs}
target="$cache/$key"
mkdir -p "$cache"

(
    flock 9  # two clones bootstrapping at once build the environment once
    if [ ! -e "$target/.complete" ]; then
        echo "Building the Python environment in $target (once per requirements.lock) ..." >&2
        rm -rf "$target"
        "$python" -m venv "$target"
        # (pip warns about every package missing from the machine-local index; drop that noise)
        "$target/bin/pip" install --quiet --disable-pip-version-check -r requirements.lock \
            2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
        touch "$target/.complete"
    fi
    touch "$target"
    # Keep the two most recently used environments; older lock files' ones are dead weight.
    ls -1dt "$cache"/*/ 2>/dev/null | tail -n +3 | while read -r old; do
        [ "${old%/}" = "$target" ] || rm -rf "$old"
    done
) 9>"$cache/.lock"

ln -sfn "$target" .venv
