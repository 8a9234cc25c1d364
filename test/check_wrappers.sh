#!/usr/bin/env bash
# Every function PostgreSQL calls into goes through the C++/Postgres boundary of src/guard.hpp:
#   - SQL-callable functions (and triggers) are defined with PGO_FUNCTION(name), never with a
#     bare PG_FUNCTION_INFO_V1 or a hand-written `Datum f(PG_FUNCTION_ARGS)`;
#   - hooks (`X_hook = f;`), transaction/subtransaction callbacks (Register[Sub]XactCallback),
#     relcache/syscache callbacks (CacheRegister*Callback), shmem/proc exit callbacks
#     (before_shmem_exit, on_shmem_exit, on_proc_exit), memory context reset callbacks
#     (`.func = f`), GUC check/assign/show hooks (the last three arguments of DefineCustom*Variable),
#     background-worker mains (bgw_function_name) and _PG_init run their whole body inside
#     boundary(): the first statement of f is `boundary(...)` or `return boundary(...)`.
# Signal handlers (pqsignal) are exempt: they run in signal context, only set flags and latches,
# and must not run C++ code that could throw.
# Fails (exit 1) naming file, line and function of each violation. Run by `make unit`.
# Known violations that another change fixes are listed in test/check_wrappers.allow ("file
# function" a line): they are reported as known, not failed; an entry that no longer matches a
# violation is reported as stale (remove it).
# Usage: bash test/check_wrappers.sh [DIR]   (default: src; src/listen, a libpq client, is skipped)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-src}
files=$(find "$dir" -path '*/listen' -prune -o \( -name '*.cpp' -o -name '*.hpp' \) -print | sort)
[ -n "$files" ] || { echo "check_wrappers: no sources under $dir"; exit 1; }
perl -e '
    use strict; use warnings;
    my $bad = 0; my $checked = 0;
    my %bgw; my %defs; # bgw mains are registered by name, defined maybe in another file
    my %text;
    my %allow; my %allow_used;
    if (open my $ah, "<", $ENV{CHECK_WRAPPERS_ALLOW} // "test/check_wrappers.allow") {
        while (<$ah>) { s/#.*//; next unless /^\s*(\S+)\s+(\w+)\s*$/; $allow{"$1 $2"} = 1 }
        close $ah;
    }
    for my $f (@ARGV) {
        local $/; open my $fh, "<", $f or die "$f: $!"; my $t = <$fh>; close $fh;
        # blank out comments and string literals (keep newlines, so line numbers stay true);
        # bgw_function_name strings are read before that
        while ($t =~ /bgw_function_name\s*,\s*[^,]*,\s*"(\w+)"/g) { $bgw{$1} = $f }
        while ($t =~ /bgw_function_name\s*,\s*"(\w+)"/g) { $bgw{$1} = $f }
        $t =~ s{//[^\n]*}{}g;
        $t =~ s{/\*.*?\*/}{ my $c = $&; $c =~ s/[^\n]//g; $c }gse;
        $t =~ s{"(?:[^"\\\n]|\\.)*"}{""}g;
        $text{$f} = $t;
    }
    sub line_of { my ($t, $pos) = @_; return 1 + (substr($t, 0, $pos) =~ tr/\n//) }
    sub body_ok { # the definition of $name in $t: is its first statement boundary(...)?
        my ($f, $t, $name, $what) = @_;
        my $found = 0;
        while ($t =~ /(?<![\w.>:])\Q$name\E\s*\(([^;{}()]|\([^()]*\))*\)\s*(?:noexcept\s*)?\{\s*/g) {
            my $pos = pos($t);
            my $start = $-[0];
            # a call inside another body is followed by ; not {, so this is a definition
            $found = 1; $checked++;
            my $rest = substr($t, $pos, 200);
            if ($rest =~ /^(?:return\s+)?(?:::)?(?:pg_outbox::)?boundary\s*\(/) {
            } elsif ($allow{"$f $name"}) {
                $allow_used{"$f $name"} = 1;
                printf "%s:%d: known (test/check_wrappers.allow): %s %s is not wrapped\n", $f, line_of($t, $start), $what, $name;
            } else {
                printf "%s:%d: %s %s does not run its body inside boundary() (src/guard.hpp)\n",
                    $f, line_of($t, $start), $what, $name;
                $bad = 1;
            }
        }
        return $found;
    }
    for my $f (sort keys %text) {
        my $t = $text{$f};
        my $is_guard = $f =~ m{(^|/)guard\.hpp$};
        while (!$is_guard && $t =~ /\bPG_FUNCTION_INFO_V1\s*\(\s*(\w+)/g) {
            printf "%s:%d: PG_FUNCTION_INFO_V1(%s) outside PGO_FUNCTION: define it with PGO_FUNCTION (src/guard.hpp)\n",
                $f, line_of($t, $-[0]), $1;
            $bad = 1;
        }
        while (!$is_guard && $t =~ /\bDatum\s+(\w+)\s*\(\s*PG_FUNCTION_ARGS\s*\)\s*\{/g) {
            printf "%s:%d: %s is a hand-written V1 function: define it with PGO_FUNCTION (src/guard.hpp)\n",
                $f, line_of($t, $-[0]), $1;
            $bad = 1;
        }
        my %reg; # name => what
        while ($t =~ /\b(\w+_hook)\s*=\s*(\w+)\s*;/g) { $reg{$2} = "hook" unless $1 =~ /^prev_/ || $2 =~ /^(nullptr|NULL)$/ }
        while ($t =~ /\bRegister(?:Sub)?XactCallback\s*\(\s*(\w+)/g) { $reg{$1} = "transaction callback" }
        while ($t =~ /\bCacheRegister(?:Relcache|Syscache)Callback\s*\(\s*(?:\w+\s*,\s*)?(\w+)\s*,/g) { $reg{$1} = "cache callback" }
        while ($t =~ /\b(?:before_shmem_exit|on_shmem_exit|on_proc_exit)\s*\(\s*(\w+)/g) { $reg{$1} = "exit callback" }
        while ($t =~ /\.func\s*=\s*(\w+)\s*;/g) { $reg{$1} = "memory context callback" }
        while ($t =~ /\bDefineCustom\w+Variable\s*\(((?:[^;()]|\((?:[^()]|\([^()]*\))*\))*)\)\s*;/g) {
            my @args = split /,/, $1;
            for my $a (@args[-3 .. -1]) {
                $a =~ s/^\s+|\s+$//g;
                $a =~ s/\s*<[^<>]*>$//; # a template instance, check_threshold<I>: its template is checked
                $reg{$a} = "GUC hook" if $a =~ /^\w+$/ && $a !~ /^(nullptr|NULL)$/;
            }
        }
        $reg{_PG_init} = "module initialiser" if $t =~ /\b_PG_init\s*\(\s*void\s*\)\s*\{/;
        for my $name (sort keys %reg) {
            body_ok($f, $t, $name, $reg{$name})
                or do { printf "%s: %s %s: its definition was not found in the same file\n", $f, $reg{$name}, $name; $bad = 1 };
        }
    }
    for my $name (sort keys %bgw) {
        my $found = 0;
        for my $f (sort keys %text) { $found ||= body_ok($f, $text{$f}, $name, "background worker main") }
        unless ($found) { printf "%s: background worker main %s: no definition found\n", $bgw{$name}, $name; $bad = 1 }
    }
    for my $k (sort keys %allow) { print "check_wrappers: stale entry in the allow list: $k\n" unless $allow_used{$k} }
    print "check_wrappers: $checked entry points checked\n" unless $bad;
    exit $bad;
' $files
