#!/usr/bin/env python3
"""Validates jek's provenance against tests/interop/slsa-provenance-v1.schema.json with the
`jsonschema` package: decodes the DSSE envelope, checks its payload type, and validates
the statement. Usage: check_provenance.py PROVENANCE.intoto.json. Exit 0 valid, 1 not."""
import base64
import json
import pathlib
import sys

import jsonschema

schema = json.loads((pathlib.Path(__file__).parent / "slsa-provenance-v1.schema.json").read_text())
envelope = json.loads(pathlib.Path(sys.argv[1]).read_text())
if envelope.get("payloadType") != "application/vnd.in-toto+json":
    sys.exit(f"payloadType is {envelope.get('payloadType')!r}")
statement = json.loads(base64.b64decode(envelope["payload"]))
errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(statement), key=str)
for e in errors:
    print(f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}", file=sys.stderr)
sys.exit(1 if errors else 0)
