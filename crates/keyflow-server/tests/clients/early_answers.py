"""Real clients against a KeyFlow server: answers decided before the body is read.

Usage: early_answers.py PORT CA_FILE ADMIN_TOKEN. Prints `http.client: ok` and, when
httpx with HTTP/2 support is installed, `httpx: ok`; exits 1 with the failure otherwise.
Run by tests/early_answers.rs.
"""
import http.client
import json
import ssl
import sys

port, cafile, admin = int(sys.argv[1]), sys.argv[2], sys.argv[3]
PATH = "/api/encryption/encrypt"
SMALL = json.dumps({"data": "x", "purpose": "userData"}).encode()
# Over the keep-alive drain (256 KiB) and the JSON limit (1 MiB).
BIG = b"a" * (2 << 20)


def fail(msg):
    print(msg)
    sys.exit(1)


def check(what, status, body, want_status, want_code):
    if status != want_status:
        fail(f"{what}: status {status}, expected {want_status}: {body[:200]!r}")
    if want_code is not None and json.loads(body)["error"] != want_code:
        fail(f"{what}: {body[:200]!r}")


# http.client: one connection object, reused; it reconnects by itself after a
# response that says `Connection: close`, and raises if the server closes without it.
ctx = ssl.create_default_context(cafile=cafile)
conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=60)
auth = {"Authorization": "Bearer " + admin}
cases = [
    ({}, "application/json", SMALL, 401, "unauthorized"),
    (auth, "application/json", SMALL, 200, None),
    ({}, "application/json", BIG, 401, "unauthorized"),
    (auth, "application/json", BIG, 413, "payload_too_large"),
    (auth, "text/plain", SMALL, 415, "unsupported_media_type"),
    (auth, "application/json; charset=utf-8", SMALL, 200, None),
]
for round_ in range(3):
    for i, (hdrs, ctype, body, status, code) in enumerate(cases):
        headers = dict(hdrs, **{"Content-Type": ctype})
        try:
            conn.request("POST", PATH, body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
        except Exception as e:  # noqa: BLE001 - any failure is the finding
            fail(f"http.client round {round_} case {i}: {type(e).__name__}: {e}")
        check(f"http.client round {round_} case {i}", r.status, data, status, code)
print("http.client: ok")

try:
    import httpx
    import h2  # noqa: F401 - httpx needs it for HTTP/2
except ImportError:
    print("httpx: not installed (pip install 'httpx[http2]'); skipped")
    sys.exit(0)

# HTTP/2, one connection, several streams: each early answer arrives and the
# connection stays usable for the next request.
big = b"a" * (8 << 20)
with httpx.Client(http2=True, verify=cafile, timeout=60) as client:
    url = f"https://localhost:{port}{PATH}"
    for round_ in range(3):
        for i, (hdrs, ctype, body, status, code) in enumerate(
            [
                ({}, "application/json", big, 401, "unauthorized"),
                (auth, "application/json", big, 413, "payload_too_large"),
                (auth, "text/plain", big, 415, "unsupported_media_type"),
                (auth, "application/json", SMALL, 200, None),
            ]
        ):
            try:
                r = client.post(url, content=body, headers=dict(hdrs, **{"Content-Type": ctype}))
            except Exception as e:  # noqa: BLE001
                fail(f"httpx round {round_} case {i}: {type(e).__name__}: {e}")
            if r.http_version != "HTTP/2":
                fail(f"httpx: {r.http_version}, expected HTTP/2")
            check(f"httpx round {round_} case {i}", r.status_code, r.content, status, code)
print("httpx: ok")
