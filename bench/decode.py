"""Micro-benchmark of the ingestion hot path's decoder: one SDK batch body to validated events.

    uv run python -m bench.decode [--events 100] [--rounds 7] [--seconds 0.5]

Compares, on the same signed-SDK-shaped body (tests/support/sdk.py):

- domain: `decode_envelope` (entries kept as raw JSON slices) + `parse_event` per entry: what the
  service runs for every batch (ingest_batch._decode and step 10), producing typed EventSchema;
- domain envelope only: `decode_envelope` and the `bytes()` copy of each entry, no per-event work;
- naive: `json.loads` + per-event dict/type checks, `uuid.UUID`, `datetime.fromisoformat`, and a
  `json.dumps` of each event (the store keeps every event's JSON text);
- parse only, no validation: `json.loads` and untyped `msgspec.json.decode`, as floors.

Each variant is timed with time.perf_counter over `--rounds` rounds of about `--seconds` each;
the best round (least disturbed) and the median are printed as microseconds per batch, with events/s
and the cost relative to the domain decoder. Single process, single thread, GC enabled.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from tests.support.sdk import batch_body, sdk_event

from bench.ingest import code_version
from tkcloud_domain.events import EventRejection, EventSchema, decode_envelope, parse_event

Decoder = Callable[[bytes], int]  # returns how many events came out valid

_PREFIXES = ("client_", "anon_")
_SCHEMA = re.compile(r"1\.\d+\.\d+\Z")


def domain(body: bytes) -> int:
    now = datetime.now(UTC)
    valid = 0
    for index, raw in enumerate(decode_envelope(body)):
        parsed = parse_event(bytes(raw), index, now=now, oldest=None)
        if isinstance(parsed, EventSchema):
            valid += 1
    return valid


def domain_envelope_only(body: bytes) -> int:
    return len([bytes(raw) for raw in decode_envelope(body)])


def _naive_event(event: Any, now: datetime) -> bool:
    """Roughly the same rules as parse_event, written the obvious way on dicts."""
    if not isinstance(event, dict):
        return False
    for key in ("schema_version", "event_id", "timestamp", "user_id"):
        if not isinstance(event.get(key), str):
            return False
    service, body = event.get("service"), event.get("event")
    if not isinstance(service, dict) or not isinstance(body, dict):
        return False
    if not all(isinstance(service.get(k), str) and service[k].strip() for k in ("name", "version")):
        return False
    if not isinstance(body.get("type"), str) or not body["type"].strip():
        return False
    if _SCHEMA.match(event["schema_version"]) is None:
        return False
    try:
        if uuid.UUID(event["event_id"]).int == 0:
            return False
        moment = datetime.fromisoformat(event["timestamp"])
    except ValueError:
        return False
    if moment.tzinfo is None or moment > now + timedelta(minutes=10):
        return False
    if not event["user_id"].startswith(_PREFIXES):
        return False
    if not isinstance(event.get("session_id"), str | None):
        return False
    environment = event.get("environment")
    if environment is not None and not isinstance(environment, dict):
        return False
    json.dumps(event, separators=(",", ":"))  # the stored raw text
    return True


def naive(body: bytes) -> int:
    now = datetime.now(UTC)
    document = json.loads(body)
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        raise ValueError("events: expected a list")
    events = document["events"]
    if not 1 <= len(events) <= 1000:
        raise ValueError("events: 1 to 1000")
    return sum(1 for event in events if _naive_event(event, now))


def json_loads_only(body: bytes) -> int:
    return len(json.loads(body)["events"])


_untyped = msgspec.json.Decoder()


def msgspec_untyped_only(body: bytes) -> int:
    return len(_untyped.decode(body)["events"])


VARIANTS: list[tuple[str, Decoder]] = [
    ("domain: decode_envelope + parse_event", domain),
    ("domain: decode_envelope only", domain_envelope_only),
    ("naive: json.loads + dict checks + dumps", naive),
    ("floor: json.loads, no validation", json_loads_only),
    ("floor: msgspec untyped, no validation", msgspec_untyped_only),
]


def time_variant(
    decoder: Decoder, body: bytes, *, rounds: int, seconds: float
) -> tuple[float, float]:
    """(best, median) seconds per call over `rounds` rounds of about `seconds` each."""
    started, calls = time.perf_counter(), 0
    while time.perf_counter() - started < seconds / 5:  # calibrate and warm up
        decoder(body)
        calls += 1
    per_round = max(1, int(calls * 5))
    results = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(per_round):
            decoder(body)
        results.append((time.perf_counter() - started) / per_round)
    return min(results), statistics.median(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decode", description=__doc__)
    parser.add_argument("--events", type=int, default=100, help="events per batch (100)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per variant (7)")
    parser.add_argument("--seconds", type=float, default=0.5, help="length of a round (0.5)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    now = datetime.now(UTC)
    body = batch_body([sdk_event(now) for _ in range(args.events)])
    figures: list[dict[str, Any]] = []
    for name, decoder in VARIANTS:
        valid = decoder(body)
        if valid != args.events:
            raise SystemExit(f"{name}: {valid} of {args.events} events valid, expected all")
        best, median = time_variant(decoder, body, rounds=args.rounds, seconds=args.seconds)
        figures.append(
            {
                "variant": name,
                "best_us_per_batch": round(best * 1e6, 1),
                "median_us_per_batch": round(median * 1e6, 1),
                "events_per_second": round(args.events / best),
            }
        )
    reference = figures[0]["best_us_per_batch"]
    for row in figures:
        row["relative_to_domain"] = round(row["best_us_per_batch"] / reference, 2)

    # One bad event must not sink the batch: the domain decoder rejects it alone.
    bad = batch_body([sdk_event(now), sdk_event(now, timestamp="yesterday")])
    parsed = [
        parse_event(bytes(r), i, now=now, oldest=None) for i, r in enumerate(decode_envelope(bad))
    ]
    if not (isinstance(parsed[0], EventSchema) and isinstance(parsed[1], EventRejection)):
        raise SystemExit("the domain decoder did not reject the bad event alone")

    if args.json:
        document = {"code": code_version(), "events": args.events, "body_bytes": len(body)}
        print(json.dumps({**document, "rows": figures}))
        return 0
    print(
        f"decode benchmark - {datetime.now(UTC):%Y-%m-%d %H:%M} UTC - Python "
        f"{platform.python_version()}, msgspec {msgspec.__version__}, code {code_version()}\n"
        f"one batch of {args.events} SDK events, {len(body) / 1024:.1f} KiB; "
        f"best of {args.rounds} rounds (median)"
    )
    print(f"{'variant':<42}{'us/batch':>18}{'events/s':>14}{'vs domain':>11}")
    for row in figures:
        best, median = row["best_us_per_batch"], row["median_us_per_batch"]
        print(
            f"{row['variant']:<42}{best:>9,.1f} ({median:>6,.1f})"
            f"{row['events_per_second']:>14,}{row['relative_to_domain']:>10.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
