#!/usr/bin/env python3
"""An independent check of a signed jek attestation result with PyJWT: the token in
TOKEN_FILE must verify under the key its `kid` names in JWKS_FILE, with ES256 only, and
carry an EAR of the veraison profile, with an expiry (exp) that has not passed. Prints the EAR's status per pod; exit 0 valid, 1 not.
Usage: verify_ear_jwt.py JWKS_FILE TOKEN_FILE"""
import json
import sys

import jwt

jwks = jwt.PyJWKSet.from_dict(json.load(open(sys.argv[1])))
token = open(sys.argv[2]).read().strip()
kid = jwt.get_unverified_header(token).get("kid")
keys = [k for k in jwks.keys if k.key_id == kid]
if not keys:
    sys.exit(f"no key {kid!r} in the JWKS")
try:
    claims = jwt.decode(token, keys[0].key, algorithms=["ES256"], options={"require": ["exp"]})
except jwt.InvalidTokenError as e:
    sys.exit(f"invalid: {e}")
if claims.get("eat_profile") != "tag:github.com,2023:veraison/ear":
    sys.exit(f"eat_profile is {claims.get('eat_profile')!r}")
for pod, sub in sorted(claims.get("submods", {}).items()):
    print(f"{pod} {sub['ear.status']}")
print("valid")
