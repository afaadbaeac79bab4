# Sourced by the CLI test scripts (cli_test.sh, cli_calibrate.sh, cli_quantize.sh,
# cli_hardening.sh): a scratch folder $TMP removed on exit, the pass/fail
# counters and the checks that count into them.
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0

ok() { pass=$((pass + 1)); }
bad() {
    fail=$((fail + 1))
    echo "FAIL: $*"
}

# expect RC PATTERN CMD...: runs CMD, wants exit code RC and PATTERN
# (extended regex) somewhere in its stdout+stderr.
expect() {
    local rc=$1 pat=$2
    shift 2
    local out got
    out=$("$@" 2>&1)
    got=$?
    if [ "$got" -eq "$rc" ] && grep -Eq -- "$pat" <<<"$out"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL: $* -> exit $got (want $rc), output lacks /$pat/:"
        head -5 <<<"$out" | sed 's/^/    /'
    fi
}
