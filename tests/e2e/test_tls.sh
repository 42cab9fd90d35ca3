#!/usr/bin/env bash
# End-to-end test of TLS (docs/tls.md) with the vmig command line, over tcp
# and unix sockets, with credentials made by scripts/tls-certs.sh:
#   - tls=x509 and tls=psk migrate (compared byte for byte); the summary and
#     --json say TLS 1.3, the cipher, 5 protected connections (control + 4
#     channels) and whether kernel TLS was used, with the reason when not;
#     tls-authz with the source's name passes; a unix URI needs tls-hostname;
#   - every refusal (an unknown CA either way, a wrong name, an expired
#     certificate, a wrong pre-shared key, x509 against psk, tls-authz
#     naming another source, TLS against plain either way, tls-ktls=require
#     without kernel TLS, tls-creds without tls, missing files) ends both
#     sides with exit 1 and the reason on each side, within seconds, and the
#     destination's existing OUTPUT keeps every byte it had.
#
# Run by meson with VMIG=<path to the vmig binary>. Exit 0 pass, 1 fail,
# 77 skip (no TLS in this build, no certtool). Leaves no process or file.
# shellcheck disable=SC2016,SC2317
set -u

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
lib_init tls python3 cmp timeout head mktemp grep certtool od
CERTS=$here/../../scripts/tls-certs.sh

# Is TLS built in? (a build without GnuTLS says so before it reads files)
run probe "$VMIG" recv --no-progress --tls psk --tls-creds "$T/nonexistent" tcp:127.0.0.1:0 \
    "$T/probe.img"
has probe.err "TLS is not built" && skip "this vmig is built without GnuTLS"

# Credentials: a good set; a rogue CA's; certificates of the good CA with a
# wrong name, and expired; a source whose client certificate the good CA
# did not sign (but that trusts the good CA).
mk() { "$CERTS" "$T/$1" "${@:2}" 2>>"$T/certs.err" || { echo "FAIL - tls-certs.sh $*: $(cat "$T/certs.err")"; exit 1; }; }
mk good
mk rogue
mk wrongname --ca-from "$T/good" --hosts elsewhere.example
mk expired --ca-from "$T/good" --expired
mkdir "$T/badclient" && cp "$T/good/ca-cert.pem" "$T/good/server-cert.pem" \
    "$T/good/server-key.pem" "$T/badclient/" &&
    cp "$T/rogue/client-cert.pem" "$T/rogue/client-key.pem" "$T/badclient/"
check "tls-certs.sh makes every file" \
    eval 'for f in ca-cert.pem server-cert.pem server-key.pem client-cert.pem client-key.pem keys.psk
          do [ -s "$T/good/$f" ] || exit 1; done'

MiB=1048576
head -c $((4 * MiB)) /dev/urandom > "$T/img" # non-zero: every page's bytes travel
head -c $((4 * MiB)) /dev/urandom > "$T/before"

# migrate NAME "RECV ARGS" "SEND ARGS" [URI]: vmig recv into a copy of
# $T/before, then vmig send of $T/img; statuses in SRC and DRC.
migrate() {
    local name=$1 ra=$2 sa=$3 uri=${4:-tcp:127.0.0.1:0}
    cp "$T/before" "$T/$name.img"
    # shellcheck disable=SC2086
    start_recv "$name.recv" "$uri" "$T/$name.img" --connect-timeout 5000 $ra
    if [ -z "$RURI" ]; then
        wait_exit "$RPID" 10
        DRC=$WRC
        SRC=none
        return
    fi
    # shellcheck disable=SC2086
    run "$name.send" "$VMIG" send --no-progress --connect-timeout 5000 $sa "$T/img" "$RURI"
    SRC=$RC
    # a refused destination exits at once; one that the source never
    # reached waits on and is stopped after 3 s
    wait_exit "$RPID" "$([ "$SRC" = 0 ] && echo 20 || echo 3)"
    DRC=$WRC
}
same() { cmp -s "$T/img" "$T/$1.img"; }
intact() { cmp -s "$T/before" "$T/$1.img"; }
G=$T/good

# ---------------------------------------------------------------- migrations
migrate x509 "--tls x509 --tls-creds $G" "--tls x509 --tls-creds $G --json"
check "x509: both sides exit 0, the copy is exact" eval '[ "$SRC/$DRC" = 0/0 ] && same x509'
check "x509: --json names TLS 1.3, the cipher, 5 connections, kernel TLS (or why not)" \
    json x509.send.out 'd["ok"] and d["tls"]["protocol"].startswith("TLS1.3 x509 AES-") and
        d["tls"]["connections"] == 5 and
        (d["tls"]["ktls_connections"] == 5 or
         (d["tls"]["ktls_connections"] == 0 and len(d["tls"]["ktls_why_not"]) > 10))'
check "x509: the receiver's summary has its TLS line" \
    has x509.recv.out "TLS  *TLS1.3 x509 AES-[0-9]*-GCM, [a-zA-Z]* records.* on 5 connections, kernel TLS on"

# vmig's record layer on one side, GnuTLS's on the other: the wire is TLS 1.3
# either way, so each reads the other's records
migrate mixed1 "--tls x509 --tls-creds $G --tls-records gnutls" "--tls x509 --tls-creds $G"
check "tls-records: GnuTLS's on the destination, vmig's on the source: the copy is exact" \
    eval '[ "$SRC/$DRC" = 0/0 ] && same mixed1 && has mixed1.recv.out "GnuTLS records"'
migrate mixed2 "--tls x509 --tls-creds $G" "--tls x509 --tls-creds $G --tls-records gnutls"
check "tls-records: vmig's on the destination, GnuTLS's on the source: the copy is exact" \
    eval '[ "$SRC/$DRC" = 0/0 ] && same mixed2 && has mixed2.recv.out "vmig records"'

migrate psk "--tls psk --tls-creds $G" "--tls psk --tls-creds $G"
check "psk: both sides exit 0, the copy is exact, the summary says psk" \
    eval '[ "$SRC/$DRC" = 0/0 ] && same psk && has psk.send.out "TLS1.3 psk"'

# resume over TLS: the source cuts channel 1 at its 2nd packet (of 2); the new
# connection goes through a TLS handshake of its own (6 connections), the
# stream goes on where the acknowledgements say, and the copy is exact.
VMIG_FAULTS=close:role=src:ch=1:pkt=2 migrate resume "--tls x509 --tls-creds $G" \
    "--tls x509 --tls-creds $G --resume on --json"
check "resume over TLS: a cut channel reconnects with a new handshake, the copy is exact" \
    eval '[ "$SRC/$DRC" = 0/0 ] && same resume && json resume.send.out \
        "d[\"ok\"] and d[\"resume\"][\"reconnects\"] == 1 and d[\"tls\"][\"connections\"] == 6"'
check "resume over TLS: the receiver's summary has its resume line" \
    has resume.recv.out "resume  *1 channel connection(s) broke and resumed"

migrate authz "--tls x509 --tls-creds $G --tls-authz vmig-source" "--tls x509 --tls-creds $G"
check "tls-authz naming the source's certificate: migrates" eval '[ "$SRC/$DRC" = 0/0 ] && same authz'

migrate unix "--tls x509 --tls-creds $G" "--tls x509 --tls-creds $G --tls-hostname localhost" \
    "unix:$T/tls.sock"
check "unix URI with tls-hostname: migrates" eval '[ "$SRC/$DRC" = 0/0 ] && same unix'

migrate unixnoname "--tls x509 --tls-creds $G" "--tls x509 --tls-creds $G" "unix:$T/tls2.sock"
check "unix URI without tls-hostname: the source says to set it; the destination is intact" \
    eval '[ "$SRC" = 1 ] && [ "$DRC" = 137 ] && has unixnoname.send.err "set tls-hostname" &&
          intact unixnoname'

# ---------------------------------------------------------------- refusals
# refused NAME "RECV ARGS" "SEND ARGS" SEND-PATTERN RECV-PATTERN
refused() {
    local name=$1
    migrate "$name" "$2" "$3"
    if [ "$SRC" = 1 ] && [ "$DRC" = 1 ] && has "$name.send.err" "$4" &&
        has "$name.recv.err" "$5" && intact "$name"; then
        pass "refused: $name: both exit 1 with the reason, the destination is intact"
    else
        fail "refused: $name: exit $SRC/$DRC, send: $(tail -n 1 "$T/$name.send.err" 2>/dev/null)," \
            "recv: $(tail -n 1 "$T/$name.recv.err" 2>/dev/null), intact: $(intact "$name" && echo yes || echo NO)"
    fi
}
X="--tls x509 --tls-creds"
refused rogue-dest "$X $T/rogue" "$X $G" \
    "the destination's certificate is refused: .*issuer is unknown" \
    "the source refused this side's certificate"
refused rogue-source "$X $G" "$X $T/badclient" \
    "the destination refused this side's certificate" \
    "the source's certificate is refused: .*issuer is unknown"
refused wrong-name "$X $T/wrongname" "$X $G" \
    "the destination's certificate is refused: .*name in the certificate does not match" \
    "the source refused this side's certificate"
refused expired "$X $T/expired" "$X $G" \
    "the destination's certificate is refused: .*expired" \
    "the source refused this side's certificate"
refused authz-other "$X $G --tls-authz another-source" "$X $G" \
    "the destination refused this side's certificate" \
    "the source's certificate is refused: .*name in the certificate does not match"
refused psk-wrong-key "--tls psk --tls-creds $G" "--tls psk --tls-creds $T/rogue" \
    "tls=psk: do both sides hold the same key" "tls=psk: do both sides hold the same key"
refused x509-vs-psk "$X $G" "--tls psk --tls-creds $G" \
    "do both sides set the same tls mode" "do both sides set the same tls mode"
refused plain-source "$X $G" "" \
    "reported: the destination requires TLS" "the source does not speak TLS"
refused plain-dest "" "$X $G" \
    "TLS: the destination closed the connection during the handshake" \
    "the source speaks TLS and this side does not"

migrate ktls "$X $G" "$X $G --tls-ktls require --json"
if [ "$SRC/$DRC" = 0/0 ]; then
    check "tls-ktls=require: kernel TLS on all 5 connections" \
        json ktls.send.out 'd["tls"]["ktls_connections"] == 5'
else
    check "tls-ktls=require without kernel TLS here: refused with the reason, destination intact" \
        eval '[ "$SRC" = 1 ] && has ktls.send.err "tls-ktls=require, but kernel TLS is off: " &&
              intact ktls'
fi

run creds-no-tls "$VMIG" send --no-progress --tls-creds "$G" "$T/img" tcp:127.0.0.1:1
check "tls-creds without tls: refused, never in the clear" \
    eval '[ "$RC" = 1 ] && has creds-no-tls.err "tls-creds is set but tls is off"'
run no-creds "$VMIG" recv --no-progress --tls x509 tcp:127.0.0.1:0 "$T/x.img"
check "tls=x509 without tls-creds: refused" eval '[ "$RC" = 1 ] && has no-creds.err "needs tls-creds"'
run missing "$VMIG" recv --no-progress --tls x509 --tls-creds "$T/nonexistent" tcp:127.0.0.1:0 \
    "$T/x.img"
check "a missing credentials file is named" \
    eval '[ "$RC" = 1 ] && has missing.err "nonexistent/ca-cert.pem"'

finish
