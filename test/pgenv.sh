# test/pgenv.sh — sourced by test/setup.sh, test/run_tests.sh, test/demo.sh and test/bench/*.sh:
# which PostgreSQL to build and test against, and a private copy of it to install into.
#
#   PG_MAJOR=NN      a Debian-packaged major: /usr/lib/postgresql/NN/bin/pg_config (default 15).
#                    When NN is neither installed here nor this Debian release's own major, the
#                    suite runs in a Debian chroot of it (test/pgchroot.sh: 17 trixie, 18 forky).
#   PG_CONFIG=path   any other installation (e.g. one built from source); PG_MAJOR follows it.

# pg_resolve: sets PG_MAJOR, PG_CONFIG, PG_DISTRO_MAJOR (this Debian release's own major) and
# PG_WHERE: "native" (installed or installable here) or "chroot".
pg_resolve() {
    [ "${PG_RESOLVED:-}" = "${PG_MAJOR:-} ${PG_CONFIG:-}" ] && return 0 # a parent script did it
    local codename
    codename=$(. /etc/os-release 2>/dev/null; echo "${VERSION_CODENAME:-}")
    case $codename in
        bookworm) PG_DISTRO_MAJOR=15 ;;
        trixie)   PG_DISTRO_MAJOR=17 ;;
        forky|sid) PG_DISTRO_MAJOR=18 ;;
        *)        PG_DISTRO_MAJOR=15 ;;
    esac
    if [ -n "${PG_CONFIG:-}" ]; then
        [ -x "$PG_CONFIG" ] || { echo "PG_CONFIG=$PG_CONFIG is not executable" >&2; return 1; }
        PG_MAJOR=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
        PG_WHERE=native
    else
        PG_MAJOR=${PG_MAJOR:-15}
        case $PG_MAJOR in 15|16|17|18) ;; *) echo "PG_MAJOR=$PG_MAJOR: pg_outbox supports 15, 16, 17 and 18" >&2; return 1 ;; esac
        PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
        if [ -x "$PG_CONFIG" ] || [ "$PG_MAJOR" = "$PG_DISTRO_MAJOR" ]; then PG_WHERE=native; else PG_WHERE=chroot; fi
    fi
    PG_RESOLVED="$PG_MAJOR $PG_CONFIG"
    export PG_MAJOR PG_CONFIG PG_WHERE PG_DISTRO_MAJOR PG_RESOLVED
}

# pg_private_install PREFIX: copy PostgreSQL's bin, lib and share directories under PREFIX (at the
# same paths below it: PostgreSQL finds its share and lib directories relative to its binaries),
# install this tree's build into that copy (make install DESTDIR=PREFIX) and set BINDIR and
# PGXS_DIR (src/ of its PGXS: test/regress/pg_regress, test/isolation/..., test/perl). Nothing
# outside PREFIX changes.
pg_private_install() {
    local prefix=$1 bindir pkglibdir sharedir pgxs
    bindir=$("$PG_CONFIG" --bindir)
    pkglibdir=$("$PG_CONFIG" --pkglibdir)
    sharedir=$("$PG_CONFIG" --sharedir)
    pgxs=$("$PG_CONFIG" --pgxs)
    local d
    for d in "$bindir" "$pkglibdir" "$sharedir"; do
        mkdir -p "$prefix$(dirname "$d")"
        [ -e "$prefix$d" ] || cp -a "$d" "$prefix$d" || return 1
    done
    make -s install PG_CONFIG="$PG_CONFIG" DESTDIR="$prefix" >/dev/null || { echo "make install into $prefix failed" >&2; return 1; }
    # the boundary self-test module (sql/boundary.sql): for the tests' installation only
    make -s install-selftest PG_CONFIG="$PG_CONFIG" DESTDIR="$prefix" >/dev/null || { echo "make install-selftest into $prefix failed" >&2; return 1; }
    BINDIR="$prefix$bindir"
    PGXS_DIR="$prefix$(dirname "$(dirname "$pgxs")")"
}
