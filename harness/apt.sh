# Sourced by the setup_*.sh scripts of the peers that come from Debian's packages:
# `apt_install WHO PACKAGE...` installs them as root, or through sudo, without questions.
apt_install() {
    local who="$1" sudo=""
    shift
    if [[ "$(id -u)" != "0" ]]; then
        if command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else
            echo "$who: need root (or sudo) to apt-get install $*" >&2
            return 1
        fi
    fi
    echo "$who: installing $*" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >&2
    $sudo apt-get install -y -qq --no-install-recommends "$@" >&2
}
