"""A bounded fuzz of every API operation, driven by the app's own OpenAPI document.

Seeded random requests (hostile path strings, out-of-range and ill-typed query values, malformed JSON and
audio bodies, plus valid ones) must never get a 5xx, and every answer must match the documented schema
for its status (errors: ``{"detail": str}``). No extra dependency: a small generator and a validator for
the JSON-schema subset FastAPI emits.
"""

from __future__ import annotations

import fnmatch
import json
import random
from typing import Any
from urllib.parse import quote

from pipelines.catalogue.manifest import read_manifest
from tests.serving.conftest import Served

BUDGET = 400  # requests in all; about 5 s
NASTY = [
    "",
    " ",
    "'",
    '"',
    "\\",
    "a\\b",
    "Don't",
    "x\ny",
    "\t",
    "%",
    "%2F",
    "..",
    "../../etc/passwd",
    "ünï ♫",
    "🎵",
    "\u202e",
    "\ufeff",
    "a" * 600,
    "{}",
    "[",
    "null",
    "-1",
    "1e309",
    "NaN",
    "track_id != ''",
    "' or 1=1 --",
]


def _value(rng: random.Random, ids: list[str]) -> Any:
    return rng.choice(
        [
            rng.choice(NASTY),
            rng.choice(ids),
            rng.randint(-5, 5),
            rng.choice([0, 1, 100, 101, 1000, 1001, 10**12, -(10**12)]),
            rng.random() * 10,
            rng.choice([True, False, None]),
            [rng.choice(ids + NASTY) for _ in range(rng.randint(0, 3))],
            {"a": 1},
        ]
    )


def _query(rng: random.Random, params: list[dict], ids: list[str]) -> dict[str, str]:
    out = {}
    for p in params:
        if p["in"] == "query" and rng.random() < 0.6:
            v = _value(rng, ids)
            out[p["name"]] = v if isinstance(v, str) else json.dumps(v) if rng.random() < 0.3 else str(v)
    return out


def _resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _valid(spec: dict, schema: dict, value: Any) -> bool:
    schema = _resolve(spec, schema)
    if "anyOf" in schema:
        return any(_valid(spec, s, value) for s in schema["anyOf"])
    kind = schema.get("type")
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
    }
    if kind and not checks[kind](value):
        return False
    if kind == "object":
        if any(r not in value for r in schema.get("required", [])):
            return False
        props = schema.get("properties", {})
        return all(_valid(spec, props[k], v) for k, v in value.items() if k in props)
    if kind == "array" and "items" in schema:
        return all(_valid(spec, schema["items"], v) for v in value)
    return True


def _body(rng: random.Random, ids: list[str]) -> tuple[dict, Any]:
    """A JSON body for /playlist: valid, half-valid or junk."""
    shape = rng.random()
    if shape < 0.4:
        body: Any = {"seeds": rng.sample(ids, rng.randint(1, 3)), "length": rng.choice([1, 5, 20, 200, 201, 0])}
        for key in ("style", "max_per_source", "max_per_artist", "exclude_duplicates"):
            if rng.random() < 0.3:
                body[key] = _value(rng, ids)
        return {"json": body}, body
    if shape < 0.8:
        body = {k: _value(rng, ids) for k in rng.sample(["seeds", "length", "style", "max_per_source", "x"], 3)}
        return {"json": body}, body
    raw = rng.choice([b"", b"{", b"null", b"[]", b'{"seeds": "a"}', bytes(rng.randrange(256) for _ in range(40))])
    return {"content": raw, "headers": {"content-type": "application/json"}}, raw


def _upload(rng: random.Random, wav: bytes) -> dict:
    data = rng.choice(
        [
            wav,
            wav[: rng.randint(0, len(wav))],
            b"RIFF" + bytes(rng.randrange(256) for _ in range(200)),
            bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))),
            b"ID3" + b"\x00" * 100,
            b"OggS" * 50,
        ]
    )
    if rng.random() < 0.3:
        return {"files": {rng.choice(["file", "audio", ""]): ("x.wav", data)}}
    return {"content": data, "headers": {"content-type": rng.choice(["audio/wav", "application/octet-stream", ""])}}


def test_fuzz_every_operation_no_server_errors_and_answers_match_the_schema(served: Served) -> None:
    client = served.client
    spec = client.get("/openapi.json").json()
    ids = list(read_manifest(served.settings.manifest_path)["track_id"])
    wav = (served.music / "noise" / "noise_1.wav").read_bytes()
    rng = random.Random(13)
    operations = [(path, method, op) for path, item in spec["paths"].items() for method, op in item.items()]
    counts: dict[int, int] = {}
    failures: list[str] = []
    for n in range(BUDGET):
        path, method, op = operations[n % len(operations)]
        url = path
        if "{track_id}" in path:
            url = path.replace(
                "{track_id}", quote(str(_value(rng, ids) if rng.random() < 0.7 else rng.choice(ids)), safe="")
            )
        kwargs: dict[str, Any] = {"params": _query(rng, op.get("parameters", []), ids)}
        if path == "/playlist":
            extra, _ = _body(rng, ids)
            kwargs |= extra
        elif path == "/similar":
            kwargs |= _upload(rng, wav)
        res = client.request(method.upper(), url, **kwargs)
        counts[res.status_code] = counts.get(res.status_code, 0) + 1
        documented = op["responses"].get(str(res.status_code))
        media = set((documented or {}).get("content", {}))
        kind = res.headers.get("content-type", "").split(";")[0]
        if res.status_code < 400 and media and (kind != "application/json" or kind not in media):  # audio, XML, M3U
            if not any(fnmatch.fnmatch(kind, m) for m in media):
                failures.append(f"{method} {url}: {res.status_code} is {kind}, documented {sorted(media)}")
            continue
        try:
            body = res.json()
        except ValueError:
            failures.append(f"{method} {url}: {res.status_code} is not JSON")
            continue
        if res.status_code >= 500 and res.status_code != 503:
            failures.append(f"{method} {url} {kwargs}: server error {res.status_code} {body}")
        elif documented is None:
            failures.append(f"{method} {path}: status {res.status_code} is not documented")
        elif "content" in documented:
            schema = documented["content"]["application/json"]["schema"]
            if not _valid(spec, schema, body):
                failures.append(f"{method} {url}: {res.status_code} body {str(body)[:200]} does not match its schema")
    print(f"\nfuzz: {BUDGET} requests, statuses {dict(sorted(counts.items()))}, {len(failures)} failures")
    assert not failures, failures[:5]
    assert counts.get(200, 0) > 20 and sum(v for k, v in counts.items() if 400 <= k < 500) > 100
