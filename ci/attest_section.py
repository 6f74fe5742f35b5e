#!/usr/bin/env python3
"""Renders the attestation section of docs/benchmarks.md from bench_attest.py's JSON."""
import json
import sys

d = json.loads(sys.argv[1])
o = d["one"]
print(f"""## Attestation (`jek attest`)

`ci/bench_attest.py`: 32 pods of the test-kernel bundle booted with `--keep-tpm` (KVM
backend), each with its own swtpm and EK certificate; figures from the result's
`jek.timingsMs`, medians of {d["runs"]} runs. Targets: appraisal under 1 ms, full attestation
under 20 ms per pod against swtpm.

| step (one pod) | median |
|---|---|
| TPM identity: EK certificate from NV, chain check, AK load, MakeCredential + ActivateCredential | {o["identity"]:.2f} ms |
| **nonce to verdict**: quote, PCR read, appraisal | **{o["nonceToVerdict"]:.2f} ms** |
| **appraisal alone** (pure Rust: signature, nonce, PCR digest, log replay, reference events) | **{o["appraise"]:.2f} ms** |
| full attestation of the pod (connect to verdict) | {o["total"]:.2f} ms |
| `jek attest` process for one pod, start to exit (includes verifying the bundle) | {d["oneWallMs"]:.1f} ms |

| pods attested concurrently | wall | pods per second |
|---|---|---|
| 16 | {d["many"]["16"]["wallMs"]:.0f} ms | {d["many"]["16"]["podsPerSecond"]:.0f} |
| 32 | {d["many"]["32"]["wallMs"]:.0f} ms | {d["many"]["32"]["podsPerSecond"]:.0f} |

Peer on the same exported evidence: `tpm2_checkquote` (signature, nonce and PCR digest only,
as a process) {d["checkquoteMs"]:.2f} ms; `jek attest --evidence` (the whole appraisal,
including bundle verification, as a process) {d["evidenceModeMs"]:.2f} ms.

Reading the attestation figures: the identity step reads the EK certificate, loads the AK
under the EK's policy and activates the credential (two policy sessions, each with a
PolicySecret); most of its time is spent in the tss2 ESAPI's own session cryptography. In
a long-running verifier it would run once per pod, when the pod registers, and later
quotes need only the nonce-to-verdict path.""")
