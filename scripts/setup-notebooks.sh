#!/usr/bin/env bash
# Set-up for executing the notebooks (idempotent; run by scripts/main.sh and scripts/test.sh).
# Installs what a fresh machine lacks, and nothing outside the checkout except the evcxr binary:
#   1. evcxr_jupyter $EVCXR_VERSION, with `cargo install --locked` (about 7 minutes, once)
#      into ~/.cargo/bin; skipped when that version is already installed.
#   2. mold, evcxr's preferred linker (it uses mold when it finds it on PATH), from Debian's
#      packages when apt-get can install it; evcxr falls back to the system linker without it.
#   3. The Jupyter client (nbclient, nbconvert, nbformat, jupyter_client, jupyter_core, pinned with
#      their dependencies in scripts/requirements-notebooks.txt) in the virtualenv .venv-jupyter/.
#   4. The evcxr kernel ("rust"), registered in the project's own Jupyter path target/jupyter/, its
#      kernel.json pointing EVCXR_CONFIG_DIR at scripts/evcxr/ (init.evcxr: optimisation level,
#      compile cache, no variable preservation after a panic) and evcxr's compile cache at
#      target/evcxr/cache/.
# With --ui, also the Jupyter Notebook web UI (scripts/requirements-notebook-ui.txt), to open the
# notebooks by hand: JUPYTER_PATH=target/jupyter .venv-jupyter/bin/jupyter notebook notebooks/
# Execute and check them:  .venv-jupyter/bin/python scripts/run-notebooks.py
set -euo pipefail
ui=0
for arg in "$@"; do
  case "$arg" in
    --ui) ui=1 ;;
    *) echo "usage: scripts/setup-notebooks.sh [--ui]" >&2; exit 2 ;;
  esac
done
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

EVCXR_VERSION=0.22.0
venv="$repo/.venv-jupyter"
jupyter_path="$repo/target/jupyter"
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$cargo_bin:$PATH"
say() { echo "setup-notebooks: $*"; }

# 1. evcxr_jupyter ---------------------------------------------------------------------------------
if ! command -v cargo >/dev/null; then
  say "cargo not found: install a Rust toolchain (rustup) first" >&2
  exit 2
fi
if cargo install --list | grep -qx "evcxr_jupyter v$EVCXR_VERSION:"; then
  say "evcxr_jupyter $EVCXR_VERSION already installed"
else
  say "installing evcxr_jupyter $EVCXR_VERSION (cargo install --locked; about 7 minutes on 2 cores)"
  # A shared CARGO_TARGET_DIR would keep evcxr's build (and its lock) there: build in a temp dir.
  env -u CARGO_TARGET_DIR cargo install --locked evcxr_jupyter --version "$EVCXR_VERSION"
fi
evcxr="$cargo_bin/evcxr_jupyter"
[ -x "$evcxr" ] || evcxr="$(command -v evcxr_jupyter)"

# 2. mold ------------------------------------------------------------------------------------------
if command -v mold >/dev/null; then
  say "linker: $(mold --version | head -1)"
elif command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  say "installing mold (Debian package) for faster links in evcxr"
  if ! { apt-get install -y -qq mold >/dev/null 2>&1 ||
         { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq mold >/dev/null 2>&1; }; }; then
    say "could not install mold: evcxr will use the system linker (slower, still works)"
  fi
else
  say "mold not found and not installable here: evcxr will use the system linker"
fi

# 3. Jupyter client (and, with --ui, the Notebook web UI) ----------------------------------------
install_requirements() {  # FILE STAMP: pip install -r FILE unless STAMP records FILE's hash
  local req="$1" stamp="$venv/$2" want
  want="$(cat "$req" "$repo/scripts/requirements-notebooks.txt" | sha256sum | cut -d' ' -f1)"
  if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    say "${req#"$repo"/} already installed in .venv-jupyter/"
    return
  fi
  say "installing ${req#"$repo"/} into .venv-jupyter/"
  if [ ! -x "$venv/bin/python" ] && ! python3 -m venv "$venv"; then
    # Debian's python3 keeps venv (ensurepip) in a separate package.
    rm -rf "$venv"
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      apt-get install -y -qq python3-venv >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq python3-venv >/dev/null; }
      python3 -m venv "$venv"
    else
      say "python3 -m venv failed: install Python's venv module (Debian: python3-venv)" >&2
      exit 2
    fi
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
}
install_requirements "$repo/scripts/requirements-notebooks.txt" .requirements.sha256
if [ "$ui" = 1 ]; then
  install_requirements "$repo/scripts/requirements-notebook-ui.txt" .requirements-ui.sha256
fi

# 4. Kernel ----------------------------------------------------------------------------------------
kernel_dir="$jupyter_path/kernels/rust"
JUPYTER_PATH="$jupyter_path" "$evcxr" --install >/dev/null
# evcxr writes argv, display_name, language; add the environment the kernel runs in.
"$venv/bin/python" - "$kernel_dir/kernel.json" "$repo" <<'EOF'
import json, sys
path, repo = sys.argv[1], sys.argv[2]
with open(path) as f:
    spec = json.load(f)
spec["env"] = {
    # init.evcxr: run at every kernel start.
    "EVCXR_CONFIG_DIR": f"{repo}/scripts/evcxr",
    # evcxr's `:cache` lives in $XDG_CACHE_HOME/evcxr: keep it inside the checkout.
    "XDG_CACHE_HOME": f"{repo}/target/evcxr/cache",
}
with open(path, "w") as f:
    json.dump(spec, f, indent=2)
    f.write("\n")
EOF
mkdir -p "$repo/target/evcxr/cache"
say "kernel 'rust' (evcxr_jupyter $EVCXR_VERSION) registered in ${kernel_dir#"$repo"/}"
say "evcxr start-up commands (scripts/evcxr/init.evcxr): $(tr '\n' ' ' < "$repo/scripts/evcxr/init.evcxr")"
