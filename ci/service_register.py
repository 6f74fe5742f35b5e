#!/usr/bin/env python3
"""Registers one pod with a running jek-attestation-verifier through its host's jek-agent, waits for
its first signed result and writes the token to a file (ci/main.sh's service step).

Usage: service_register.py VERIFIER_URL AGENT_URL POD_ID BUNDLE POD_FILE TOKEN_FILE ADMIN_TOKEN_FILE

The verifier is called with the admin's bearer token (jek-attestation-verifier add-token) from
ADMIN_TOKEN_FILE."""
import hashlib
import json
import sys
import time
import urllib.request

verifier, agent, pod_id, bundle, pod_file, token_file, admin_token_file = sys.argv[1:8]
admin_token = open(admin_token_file).read().strip()


def call(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, method=method, data=data, headers={"content-type": "application/json",
                                                                      "authorization": f"Bearer {admin_token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        sys.exit(f"{method} {url}: {e.code} {e.read().decode()}")


digest = "sha256:" + hashlib.sha256(open(bundle, "rb").read()).hexdigest()
reg = call("POST", f"{verifier}/v1/pods", {"agent": agent, "podId": pod_id, "bundle": digest,
                                           "podYaml": open(pod_file).read()})
print(f"  registered {reg['pod']} (AK {reg['akName'][:16]}..., proven by credential activation)")
for _ in range(100):
    state = call("GET", f"{verifier}/v1/pods/{pod_id}")
    if state["status"] != "none":
        break
    time.sleep(0.1)
if state["status"] != "affirming":
    sys.exit(f"the service's result is {state['status']}: {state['claims']}")
with open(token_file, "w") as f:
    f.write(call("GET", f"{verifier}/v1/pods/{pod_id}/result")["token"])
print(f"  {reg['pod']} {state['status']}, signed result in {token_file}; the fleet page is {verifier}/")
