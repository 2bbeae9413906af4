"""Schemathesis hooks for CI (loaded through SCHEMATHESIS_HOOKS)."""

import uuid

import schemathesis


@schemathesis.hook
def map_headers(ctx, headers):
    # A fresh Idempotency-Key for every generated request: the same key with another body is
    # refused by design (422 idempotency_key_reused), which a stateless fuzzer cannot tell from
    # a bug.
    if headers and "Idempotency-Key" in headers:
        headers["Idempotency-Key"] = str(uuid.uuid4())
    return headers
