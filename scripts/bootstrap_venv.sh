#!/usr/bin/env bash
# Make ./.venv: this clone's environment, built from requirements.lock.
#
# The packages (~6 GB: torch is a CUDA build) are installed once per lock-file hash in a
# shared cache outside the clone, so fresh clones (CI starts from one every time) reuse
# them instead of filling the disk. ./.venv itself is a tiny per-clone overlay venv: its
# site-packages adds the shared environment's site-packages and installs this clone's
# `scalselect` package in editable mode (a .pth line with the clone root), so
# `.venv/bin/python -m scalselect` works from any folder and always runs this clone's
# code, whichever clone was set up last. The shared environment's console scripts
# (snakemake, accelerate, pytest, ...) are copied into .venv/bin, bound to the overlay's
# python. A real ./.venv directory made by the user (no overlay marker) is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
clone=$(pwd -P)

python=${PYTHON:-python3}
marker=.venv/.scalselect-shared
if [ -d .venv ] && [ ! -L .venv ] && [ ! -e "$marker" ]; then
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

# The overlay is a few files: rebuilt from scratch each time. The marker goes in first,
# .complete last, so an interrupted bootstrap is redone by the next one.
rm -rf .venv
"$target/bin/python" -m venv --without-pip .venv
echo "$target" > "$marker"
shared_site=$("$target/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
printf "import site; site.addsitedir('%s')\n" "$shared_site" > "$site/_scalselect_shared.pth"
echo "$clone" > "$site/_scalselect_clone.pth"
for script in "$target"/bin/*; do
    name=$(basename "$script")
    [ -f "$script" ] && [ ! -e ".venv/bin/$name" ] || continue
    case "$(head -n 1 "$script" | tr -d '\0')" in
        "#!$target/bin/python"*)
            { echo "#!$clone/.venv/bin/python"; tail -n +2 "$script"; } > ".venv/bin/$name"
            chmod +x ".venv/bin/$name" ;;
    esac
done
# The `scalselect` console script of pyproject.toml.
printf '#!%s\nimport sys\nfrom scalselect.cli import main\nsys.exit(main())\n' \
    "$clone/.venv/bin/python" > .venv/bin/scalselect
chmod +x .venv/bin/scalselect
touch .venv/.complete
