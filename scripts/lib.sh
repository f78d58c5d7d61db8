# Shared by scripts/demo, scripts/test and scripts/bench. Source it; it defines functions only.

# Debian packages regfs's scripts and tests use: the reference registry, independent clients
# (skopeo, umoci) as oracles, zstd for `tar --zstd`, fuse3 for fusermount3, htpasswd for the
# Basic-auth test, curl and openssl for the benchmark's baseline; perl and git for the distro image
# (src/testkit/fixtures/distro.rs rebuilds a Debian image from what dpkg installed, perl and git
# as two of its layers); jq for the README's `.regfs/status.json` example (tests/mount/status.rs);
# busybox-static for the image run from rootfs/ (src/testkit/fixtures/busybox.rs, pushed by
# scripts/demo too).
REGFS_PACKAGES="docker-registry skopeo umoci zstd fuse3 apache2-utils curl openssl tar procps util-linux python3 perl git jq busybox-static"
# What only the tests use, kept off a demo machine (containerd's package starts a system service
# where systemd runs): the runtimes tests/mount/run_rootfs.rs runs the busybox image with, podman and
# runc (`podman run --rootfs`; runc where crun refuses hybrid cgroups) and systemd-container
# (`systemd-nspawn`); containerd (with ctr) as a second oracle, a real runtime's layer applier
# (tests/mount/rootfs.rs, entries under symlinks).
REGFS_TEST_PACKAGES="podman runc systemd-container containerd"

# regfs_install_deps [test]: install what is missing of REGFS_PACKAGES (and, given `test`, of
# REGFS_TEST_PACKAGES).
regfs_install_deps() {
    local missing=() wanted=$REGFS_PACKAGES
    [ "${1:-}" = test ] && wanted="$wanted $REGFS_TEST_PACKAGES"
    for p in $wanted; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing: ${missing[*]}" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
    fi
    command -v cargo >/dev/null || { echo "cargo is needed (https://rustup.rs)" >&2; return 1; }
    [ -e /dev/fuse ] || { echo "/dev/fuse is missing: regfs needs FUSE" >&2; return 1; }
}

# regfs_own_dir DIR: DIR is a directory itself (not a link to one), owned by the caller, and
# writable by no one else; otherwise say why and fail. For state kept under shared directories.
regfs_own_dir() {
    local d=$1 perm
    if [ -L "$d" ] || [ ! -d "$d" ]; then
        echo "$d: not a directory (or a symbolic link): refusing to use it" >&2
        return 1
    fi
    if [ "$(stat -c %u "$d")" != "$(id -u)" ]; then
        echo "$d: owned by uid $(stat -c %u "$d"), not by you (uid $(id -u)): refusing to use it" >&2
        return 1
    fi
    perm=$(stat -c %a "$d")
    if (( 8#$perm & 8#022 )); then
        echo "$d: writable by others (mode $perm): refusing to use it" >&2
        return 1
    fi
}

regfs_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# regfs_start_registry DIR: a loopback reference registry storing under DIR; prints its URL.
regfs_start_registry() {
    local dir=$1 port
    port=$(regfs_free_port)
    mkdir -p "$dir/data"
    cat > "$dir/config.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
compatibility:
  schema1:
    enabled: true
YML
    docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
    # The pid and the process's start time (field 22 of /proc/PID/stat): a pid alone may be
    # reused by someone else's process once the registry has died.
    echo "$! $(regfs_start_time $!)" > "$dir/registry.pid"
    for _ in $(seq 1 100); do
        if curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1; then
            echo "http://127.0.0.1:$port"
            return 0
        fi
        sleep 0.1
    done
    echo "the registry did not start; see $dir/registry.log" >&2
    return 1
}

regfs_stop_registry() {
    local dir=$1 pid started
    if [ -f "$dir/registry.pid" ]; then
        read -r pid started < "$dir/registry.pid" || true
        # Only the very process started: same pid, same start time, and a docker-registry.
        if [ -n "${pid:-}" ] && [ -n "${started:-}" ] && [ "$(regfs_start_time "$pid")" = "$started" ] \
            && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qE '^([^ ]*/)?docker-registry '; then
            kill "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$dir/registry.pid"
}

# regfs_start_time PID: the process's start time in clock ticks since boot; nothing if it is gone.
regfs_start_time() {
    # The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    sed -n 's/^.*) //p' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20
}
