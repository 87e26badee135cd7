# tap.sh — TAP helpers for the shell tests (POSIX sh). Source it, then:
#   run CMD...            runs CMD, capturing stdout in $T/out, stderr in $T/err and the exit code in $rc
#   is "$got" "$want" NAME   ok "$cond" NAME   has FILE TEXT NAME   done_testing
# $T is a fresh temp directory removed at exit; $MODE_BIN and $MODE_FIXTURES come from make check.
set -eu
: "${MODE_BIN:?run through make check}" "${MODE_FIXTURES:?run through make check}"
PATH=$MODE_BIN:$PATH
T=$(mktemp -d "${TMPDIR:-/tmp}/mode-sh-XXXXXX")
trap 'rm -rf "$T"' EXIT
n_test=0
n_fail=0

pass() { n_test=$((n_test + 1)); echo "ok $n_test - $1"; }
fail() { n_test=$((n_test + 1)); n_fail=$((n_fail + 1)); echo "not ok $n_test - $1"; }
diag() { printf '%s\n' "$@" | sed 's/^/# /'; }

run() {
    set +e
    "$@" >"$T/out" 2>"$T/err"
    rc=$?
    set -e
}

is() { # got want name
    if [ "$1" = "$2" ]; then pass "$3"; else fail "$3"; diag "got:  $1" "want: $2"; fi
}

has() { # file text name
    if grep -qF -- "$2" "$1"; then pass "$3"; else fail "$3"; diag "$1 lacks: $2" "it has:"; sed 's/^/#   /' "$1" | head -5; fi
}

same_file() { # a b name
    if cmp -s "$1" "$2"; then pass "$3"; else fail "$3"; diag "$1 and $2 differ"; fi
}

done_testing() {
    echo "1..$n_test"
    [ "$n_fail" -eq 0 ]
}
