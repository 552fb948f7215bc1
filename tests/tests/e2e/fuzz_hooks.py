"""Schemathesis hooks for the fuzz test (tests/tests/e2e/fuzz.rs).

A job's `image_url` is fetched by a worker of the `aiprod dev` under test. A generated https
URL names an arbitrary host of the internet, and this test must send traffic only to this
machine, so every http(s) `image_url` is pointed at a closed loopback port over plain http
before it is sent: still a valid request, which the API accepts and the worker's fetcher
refuses (plain http and loopback are both off) without opening a connection. `data:` URIs stay
as generated: a worker decodes them locally.
"""

import schemathesis

HARMLESS_IMAGE = "http://127.0.0.1:9/fuzz.png"


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if isinstance(body, dict):
        url = body.get("image_url")
        if isinstance(url, str) and url[:4].lower() == "http":
            body["image_url"] = HARMLESS_IMAGE
