# Sourced by scripts/lab.sh and scripts/test.sh (not run on its own): the set-up both share.
#
#   apt_install PROGRAM PACKAGE   install a Debian package (as root) when PROGRAM is missing
#   setup_venv EXTRAS             make or reuse the virtual environment $VENV (default .venv),
#                                 activate it, and install torch==2.13.0 then rangerlab[EXTRAS]
#
# Everything is idempotent: a second run finds the packages and the environment in place.

apt_updated=""

apt_install() {
    command -v "$1" >/dev/null || apt_install_package "$2"
}

apt_install_package() {
    if [ "$(id -u)" != 0 ]; then
        echo "missing: Debian's $1; install it as root (apt-get install -y $1)" >&2
        return 1
    fi
    [ -n "$apt_updated" ] || { apt-get update && apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y "$1"
}

setup_venv() {
    VENV="${VENV:-.venv}"
    if [ ! -x "$VENV/bin/python" ]; then
        # Debian's python3 comes without venv; python3-venv brings it.
        if ! python3 -c "import ensurepip" 2>/dev/null; then
            apt_install_package python3-venv
        fi
        python3 -m venv "$VENV"
    fi
    # shellcheck disable=SC1091
    . "$VENV/bin/activate"
    # torch first and pinned (this machine's wheel is the CPU build); named again below so the
    # resolver cannot replace it while installing the extras.
    pip install torch==2.13.0
    pip install -e ".[$1]" torch==2.13.0
}
