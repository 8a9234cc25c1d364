#!/usr/bin/env bash
# Debian chroots that carry other PostgreSQL majors than the host's, for the test suite and the
# benchmarks (PG_MAJOR=17 bash test/run_tests.sh). Debian 12 carries PostgreSQL 15; Debian's own
# archive (the mirror the host's apt uses) also serves trixie (PostgreSQL 17) and forky
# (PostgreSQL 18). Nothing is added to the host's apt sources; the host's PostgreSQL is untouched.
#
#   bash test/pgchroot.sh path  NN          print the chroot's directory (whether made or not)
#   bash test/pgchroot.sh ensure NN         make the chroot unless it is there and complete
#   bash test/pgchroot.sh run NN CMD...     run CMD (as root) inside it, /proc, /dev, /dev/pts and
#                                           a private /dev/shm mounted for the time of the command
#   bash test/pgchroot.sh test NN [ARGS]    copy this tree into the chroot and run
#                                           test/run_tests.sh ARGS there against PostgreSQL NN
#   bash test/pgchroot.sh intree NN SCRIPT [ARGS]  the same for any script of the tree (the
#                                           benchmarks: PG_MAJOR=18 bash test/bench/drain_bench.sh)
#   bash test/pgchroot.sh remove NN         delete the chroot (refuses while something is mounted)
#
# A chroot lives in $PG_OUTBOX_CHROOTS/NN (default /var/lib/pg_outbox-chroots/NN), outside any
# clone, so CI's fresh clones reuse it. It is complete when its marker file .pg_outbox-complete
# exists (written last, holding the package list); an incomplete one (an interrupted run) is made
# again, and one whose list is older gets the packages added since. Each chroot is used by one command at a time (flock on NN.lock): two runs of the suite
# against one major queue up rather than share one /dev/shm. Needs root and debootstrap.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
BASE=${PG_OUTBOX_CHROOTS:-/var/lib/pg_outbox-chroots}
MARKER=.pg_outbox-complete

die() { echo "pgchroot: $*" >&2; exit 1; }

suite_of() { # major -> Debian suite, debootstrap script
    case $1 in
        17) echo "trixie trixie" ;;
        18) echo "forky sid" ;; # bookworm's debootstrap has no forky script: sid's fits
        *) die "no Debian chroot for PostgreSQL $1 (17 and 18 are made; 15 is the host's own)" ;;
    esac
}

# The Debian mirror the host's apt uses (deb822 .sources or one-line .list), else deb.debian.org.
host_mirror() {
    local m
    m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '/^URIs:/ {u=$2} /^Suites:/ && u ~ /debian\/?$/ && $0 !~ /security/ {print u; exit}')
    [ -n "$m" ] || m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { if ($i ~ /debian\/?$/) { print $i; exit } break } }')
    echo "${m:-http://deb.debian.org/debian}"
}

packages() { # major
    echo "postgresql-$1 postgresql-server-dev-$1 libpq-dev libboost-json-dev libgtest-dev libipc-run-perl g++ make perl ca-certificates pgbouncer"
}

mounted_under() { # dir: any mount point at or below it?
    awk -v d="$1" '$2 == d || index($2, d "/") == 1 {found=1} END {exit !found}' /proc/self/mounts
}

MOUNTS=()
unmount_all() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTS[$i]}" 2>/dev/null || umount -l "${MOUNTS[$i]}" 2>/dev/null || echo "pgchroot: could not unmount ${MOUNTS[$i]}" >&2
    done
    MOUNTS=()
}
mount_in() { # root
    local r=$1
    trap unmount_all EXIT
    trap 'unmount_all; exit 130' INT TERM
    mkdir -p "$r/proc" "$r/dev" "$r/dev/pts" "$r/dev/shm"
    mount -t proc proc "$r/proc" && MOUNTS+=("$r/proc")
    mount --bind /dev "$r/dev" && MOUNTS+=("$r/dev")
    mount --bind /dev/pts "$r/dev/pts" && MOUNTS+=("$r/dev/pts")
    # a /dev/shm of its own (PostgreSQL's dynamic shared memory), not the host's
    mount -t tmpfs -o mode=1777,size=512m shm "$r/dev/shm" && MOUNTS+=("$r/dev/shm")
}

in_root() { # root cmd...: run cmd inside, mounts held for its time (caller holds the lock)
    local r=$1; shift
    mount_in "$r"
    local rc=0
    chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive TERM="${TERM:-dumb}" "$@" 9>&- || rc=$?
    unmount_all
    trap - EXIT INT TERM
    return $rc
}

make_chroot() { # major
    local major=$1 r="$BASE/$1" suite script mirror t0=$SECONDS
    read -r suite script < <(suite_of "$major")
    if [ -f "$r/$MARKER" ]; then
        [ "$(cat "$r/$MARKER")" = "$(packages "$major")" ] && return 0
        # complete, but made with an older package list: add what is new
        echo "pgchroot: $r: installing the packages added since it was made"
        in_root "$r" sh -c "apt-get update -q && apt-get install -y -q $(packages "$major")" \
            >"$BASE/$major.apt.log" 2>&1 ||
            { tail -20 "$BASE/$major.apt.log" >&2; die "package installation failed (log: $BASE/$major.apt.log)"; }
        in_root "$r" apt-get clean
        packages "$major" >"$r/$MARKER"
        return 0
    fi
    command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap; test/setup.sh does)"
    mounted_under "$r" && die "$r has something mounted in it; unmount it first"
    if [ -e "$r" ]; then
        echo "pgchroot: $r is incomplete (interrupted?): making it again"
        rm -rf --one-file-system "$r"
    fi
    mirror=$(host_mirror)
    echo "pgchroot: debootstrap $suite (PostgreSQL $major) from $mirror into $r"
    mkdir -p "$r"
    debootstrap --variant=minbase --components=main "$suite" "$r" "$mirror" \
        "/usr/share/debootstrap/scripts/$script" >"$BASE/$major.debootstrap.log" 2>&1 ||
        { tail -20 "$BASE/$major.debootstrap.log" >&2; die "debootstrap $suite failed (log: $BASE/$major.debootstrap.log)"; }
    # A testing suite's Release file can be past its Valid-Until date on a mirror snapshot.
    [ "$suite" = trixie ] || echo 'Acquire::Check-Valid-Until "false";' >"$r/etc/apt/apt.conf.d/99pg-outbox-no-valid-until"
    echo 'APT::Install-Recommends "false";' >"$r/etc/apt/apt.conf.d/99pg-outbox-no-recommends"
    # Nothing starts on install (invoke-rc.d asks policy-rc.d), and no cluster is created: the
    # tests make their own instances.
    printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
    chmod 755 "$r/usr/sbin/policy-rc.d"
    mkdir -p "$r/etc/postgresql-common"
    echo "create_main_cluster = false" >"$r/etc/postgresql-common/createcluster.conf"
    cp /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true
    echo "pgchroot: installing $(packages "$major")"
    in_root "$r" sh -c "apt-get update -q && apt-get install -y -q $(packages "$major")" \
        >"$BASE/$major.apt.log" 2>&1 ||
        { tail -20 "$BASE/$major.apt.log" >&2; die "package installation failed (log: $BASE/$major.apt.log)"; }
    [ -x "$r/usr/lib/postgresql/$major/bin/pg_config" ] || die "no pg_config for $major in $r"
    in_root "$r" apt-get clean
    packages "$major" >"$r/$MARKER"
    echo "pgchroot: $r ready in $((SECONDS - t0)) s ($(du -sh --one-file-system "$r" | cut -f1))"
}

# Variables handed into the chroot (its commands start with a clean environment).
PASS_VARS="TAP_FILES REGRESS_TESTS ISOLATION_TESTS CI RUNS EVENTS CEILING LAT_SECONDS LAT_CPU PRODUCERS PHASES KEEP SAMPLE WHAT BATCH
           BULK_ROWS BULK_REPEAT PGBENCH_SECONDS PGBENCH_ROUNDS BENCH_PORT BENCH_SYNC_COMMIT BATCH_DELAY
           RATE DURATION ROUNDS"

in_tree() { # major script args...: copy the tree in, run bash script args there, copy nothing back
    local major=$1 script=$2; shift 2
    local r="$BASE/$major" dest rc=0 v envs=()
    dest=$(mktemp -d "$r/root/pg_outbox.XXXXXX")
    # the tree as it is (uncommitted changes included), without build products or .git
    (cd "$HERE" && if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files -z --cached --others --exclude-standard | xargs -0 -r cp --parents -t "$dest" 2>/dev/null || true
    else
        tar --exclude=.git -cf - . | tar -xf - -C "$dest"
    fi)
    [ -f "$dest/$script" ] || die "copying the tree into $dest failed"
    for v in $PASS_VARS; do [ -n "${!v+x}" ] && envs+=("$v=${!v}"); done
    echo "pgchroot: running $script in $r (PostgreSQL $major)"
    in_root "$r" env PG_MAJOR="$major" "${envs[@]}" \
        bash -c 'cd "$1" && script=$2 && shift 2 && bash "$script" "$@"' _ "/root/$(basename "$dest")" "$script" "$@" || rc=$?
    rm -rf --one-file-system "$dest"
    [ $rc = 0 ] || echo "pgchroot: (paths above are inside the chroot: prefix them with $r)"
    return $rc
}

[ $# -ge 2 ] || { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
cmd=$1 major=$2; shift 2
suite_of "$major" >/dev/null
[ "$cmd" = path ] && { echo "$BASE/$major"; exit 0; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mount)"
mkdir -p "$BASE"
exec 9>"$BASE/$major.lock" # held until this script ends; the chroot's processes do not inherit it
flock -w 7200 9 || die "$BASE/$major.lock stayed locked for 2 hours"
case $cmd in
    ensure) make_chroot "$major" ;;
    run)    make_chroot "$major"; in_root "$BASE/$major" "$@" ;;
    test)   make_chroot "$major"; in_tree "$major" test/run_tests.sh "$@" ;;
    intree) make_chroot "$major"; in_tree "$major" "$@" ;;
    remove) mounted_under "$BASE/$major" && die "$BASE/$major has something mounted in it"
            rm -rf --one-file-system "$BASE/$major" ;;
    *) die "unknown command $cmd (path, ensure, run, test, intree, remove)" ;;
esac
