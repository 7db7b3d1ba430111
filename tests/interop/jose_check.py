#!/usr/bin/env python3
"""Independent JOSE check of our tokens with jwcrypto (not our code, not jsonwebtoken).

Usage: jose_check.py TOKEN_FILE PUBLIC_KEY_PEM OCT_JWK_JSON

Verifies the compact JWS in TOKEN_FILE with the RSA public key (RS256 only). If its payload has a
"private" claim (an access token), decrypts that JWE with the oct key (dir / A128CBC-HS256 only).
Prints one JSON object: {"jws_header", "payload", "jwe_header", "claims"} (the last two only for
access tokens). Any failure: a message on stderr and exit status 1.
"""

import json
import sys

from jwcrypto import jwe, jwk, jws


def main(token_path, public_pem_path, jwk_path):
    with open(token_path, encoding="ascii") as f:
        token = f.read().strip()
    with open(public_pem_path, "rb") as f:
        public = jwk.JWK.from_pem(f.read())
    with open(jwk_path, encoding="ascii") as f:
        secret = jwk.JWK(**json.load(f))

    outer = jws.JWS()
    outer.allowed_algs = ["RS256"]
    outer.deserialize(token)
    outer.verify(public, alg="RS256")
    payload = json.loads(outer.payload)
    out = {"jws_header": outer.jose_header, "payload": payload}

    if "private" in payload:
        inner = jwe.JWE()
        inner.allowed_algs = ["dir", "A128CBC-HS256"]
        inner.deserialize(payload["private"], key=secret)
        out["jwe_header"] = inner.jose_header
        out["claims"] = json.loads(inner.payload)
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    try:
        main(*sys.argv[1:])
    except Exception as e:  # noqa: BLE001 - any failure is a rejection
        print(f"rejected: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
