#!/usr/bin/env bash
# The PostgreSQL APIs that differ between the supported majors (15-18) are called only through
# src/pg_compat.hpp, and PG_VERSION_NUM is tested nowhere else: fails (exit 1) and names the
# line otherwise. Run by `make unit`. Comments are not checked.
set -euo pipefail
cd "$(dirname "$0")/.."
perl -ne '
    BEGIN { $bad = 0 }
    next if $ARGV =~ m{(^|/)pg_compat\.hpp$};
    my $code = $_;
    $code =~ s{//.*}{};
    if ($code =~ /(?<![:\w])(pg_\w+_ownercheck|object_ownercheck|ExecInsertIndexTuples|LogLogicalMessage|getIdentitySequence|IsBackgroundWorker|AmBackgroundWorkerProcess|RelationGetPrimaryKeyIndex|index_beginscan)\b/
        || $code =~ /\b(PG_VERSION_NUM|boost::json::error_code)\b/) {
        print "$ARGV:$.: $1: use src/pg_compat.hpp (or boost::system::error_code)\n";
        $bad = 1;
    }
    close ARGV if eof; # line numbers per file
    END { exit $bad }
' $(find src -name '*.cpp' -o -name '*.hpp' | sort)
