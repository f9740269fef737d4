#!/usr/bin/env bash
# A throwaway certificate authority for the lab and Molecule, never for production:
#   tools/lab-ca.sh DIR STEM NAME [NAME...]
# makes DIR/ca.crt and DIR/ca.key once (ECDSA P-256, 30 days), then DIR/STEM.crt
# and DIR/STEM.key, a P-256 leaf for the NAMEs (DNS names, '*.x' for a wildcard)
# signed by it, valid 7 days. Kept while valid for another day with the same
# names, so a second run changes nothing. Keys are 0600.
set -euo pipefail
if [ "$#" -lt 3 ]; then
    echo "usage: $0 DIR STEM NAME [NAME...]" >&2
    exit 2
fi
dir=$1 stem=$2
shift 2
umask 077
mkdir -p "$dir"
cd "$dir"
if ! openssl x509 -in ca.crt -noout -checkend 86400 >/dev/null 2>&1 || [ ! -s ca.key ]; then
    openssl ecparam -name prime256v1 -genkey -noout -out ca.key
    openssl req -x509 -new -key ca.key -sha256 -days 30 -subj "/CN=ringmaster lab CA (throwaway)" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out ca.crt
    rm -f -- *.srl
fi
san=$(printf 'DNS:%s,' "$@")
san=${san%,}
if [ -s "$stem.key" ] && openssl x509 -in "$stem.crt" -noout -checkend 86400 >/dev/null 2>&1 \
    && openssl verify -CAfile ca.crt "$stem.crt" >/dev/null 2>&1 \
    && [ "$(openssl x509 -in "$stem.crt" -noout -ext subjectAltName 2>/dev/null | tail -n +2 | tr -d ' ')" = "$san" ]; then
    exit 0
fi
openssl ecparam -name prime256v1 -genkey -noout -out "$stem.key"
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
    "$san" >"$stem.ext"
openssl req -new -key "$stem.key" -subj "/CN=$1" -out "$stem.csr"
openssl x509 -req -in "$stem.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 7 \
    -extfile "$stem.ext" -out "$stem.crt" 2>/dev/null
rm -f -- "$stem.csr" "$stem.ext"
chmod 0644 ca.crt "$stem.crt"
