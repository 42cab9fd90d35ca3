#!/bin/sh
# Make a TLS credentials directory for vmig's tls=x509 and tls=psk modes, for
# tests and first trials: a private CA, the destination's (server) and the
# source's (client) certificates signed by it, and a random pre-shared key.
# GnuTLS's certtool and psktool (Debian: gnutls-bin) do the work; ECDSA P-256
# keys. For production, use certificates from your own CA: the layout is
# what vmig (and QEMU's tls-creds-x509) read:
#
#   DIR/ca-cert.pem       the CA both sides trust
#   DIR/server-cert.pem   the destination's certificate (names: --hosts)
#   DIR/server-key.pem    its private key
#   DIR/client-cert.pem   the source's certificate (name: --client-name)
#   DIR/client-key.pem    its private key
#   DIR/keys.psk          "identity:hexkey" for tls=psk (identity: vmig)
#
# Usage: tls-certs.sh DIR [--hosts NAME,NAME...] [--client-name NAME]
#                         [--expired] [--ca-from DIR2]
#   --hosts        names and addresses the server certificate carries
#                  (default: localhost,127.0.0.1,::1)
#   --client-name  the client certificate's DNS name (default: vmig-source)
#   --expired      the server certificate's validity ended in 2021 (tests)
#   --ca-from DIR2 sign with the CA of DIR2 instead of making a new one
# The CA's key stays in DIR (ca-key.pem); keep it away from the hosts.
set -eu
usage() { echo "usage: $0 DIR [--hosts LIST] [--client-name NAME] [--expired] [--ca-from DIR2]" >&2; exit 2; }
[ $# -ge 1 ] || usage
dir=$1; shift
hosts=localhost,127.0.0.1,::1
client=vmig-source
expired=0
ca_from=
while [ $# -gt 0 ]; do
    case $1 in
    --hosts) hosts=$2; shift 2 ;;
    --client-name) client=$2; shift 2 ;;
    --expired) expired=1; shift ;;
    --ca-from) ca_from=$2; shift 2 ;;
    *) usage ;;
    esac
done
command -v certtool >/dev/null || { echo "$0: certtool not found (Debian: apt-get install gnutls-bin)" >&2; exit 1; }
mkdir -p "$dir"
umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

key() { certtool --generate-privkey --key-type=ecdsa --outfile "$1" 2>/dev/null; }

if [ -n "$ca_from" ]; then
    cp "$ca_from/ca-cert.pem" "$ca_from/ca-key.pem" "$dir/"
else
    key "$dir/ca-key.pem"
    printf 'cn = "vmig test CA"\nca\ncert_signing_key\nexpiration_days = 3650\n' > "$tmp/ca"
    certtool --generate-self-signed --load-privkey "$dir/ca-key.pem" --template "$tmp/ca" \
        --outfile "$dir/ca-cert.pem" 2>/dev/null
fi

# the destination: a TLS server certificate with every name in --hosts
{
    echo 'cn = "vmig destination"'
    echo "$hosts" | tr ',' '\n' | while read -r h; do
        [ -n "$h" ] || continue
        case $h in
        *[!0-9.]*) case $h in *:*) echo "ip_address = \"$h\"" ;; *) echo "dns_name = \"$h\"" ;; esac ;;
        *) echo "ip_address = \"$h\"" ;;
        esac
    done
    echo 'tls_www_server'
    echo 'signing_key'
    if [ "$expired" = 1 ]; then
        echo 'activation_date = "2020-01-01 00:00:00 UTC"'
        echo 'expiration_date = "2021-01-01 00:00:00 UTC"'
    else
        echo 'expiration_days = 825'
    fi
} > "$tmp/server"
key "$dir/server-key.pem"
certtool --generate-certificate --load-privkey "$dir/server-key.pem" \
    --load-ca-certificate "$dir/ca-cert.pem" --load-ca-privkey "$dir/ca-key.pem" \
    --template "$tmp/server" --outfile "$dir/server-cert.pem" 2>/dev/null

# the source: a TLS client certificate
printf 'cn = "%s"\ndns_name = "%s"\ntls_www_client\nsigning_key\nexpiration_days = 825\n' \
    "$client" "$client" > "$tmp/client"
key "$dir/client-key.pem"
certtool --generate-certificate --load-privkey "$dir/client-key.pem" \
    --load-ca-certificate "$dir/ca-cert.pem" --load-ca-privkey "$dir/ca-key.pem" \
    --template "$tmp/client" --outfile "$dir/client-cert.pem" 2>/dev/null

# a 256-bit pre-shared key
printf 'vmig:%s\n' "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" > "$dir/keys.psk"
chmod 600 "$dir"/*-key.pem "$dir/keys.psk"
chmod 644 "$dir"/*-cert.pem
echo "$0: credentials in $dir (server names: $hosts; client: $client)" >&2
