"""Delivery against a real HTTP endpoint on loopback: retries, idempotency keys, rejections, resume."""

import json
import os
from pathlib import Path

import dagster as dg
import pytest

from prequel_dagster.config import load_config
from prequel_dagster.config.errors import DeliveryError
from prequel_dagster.delivery.receiver import Receiver
from prequel_dagster.engine import run_extract, run_load
from prequel_dagster.lake.deliveries import StreamState
from prequel_dagster.stores import LocalStore

from .dagster_helpers import metadata_of, run_assets
from .pg_helpers import create_provider_db, two_provider_config


@pytest.fixture
def acme(pg, tmp_path, monkeypatch):
    password = "acme-" + os.urandom(6).hex()
    for k, v in {"ACME_PG_PASSWORD": password, "GLOBEX_PG_PASSWORD": "unused", "APP_TOKEN": "t0ken-value"}.items():
        monkeypatch.setenv(k, v)
    create_provider_db(pg, "acme", users=45, domain="acme.test", password=password)
    return tmp_path


def _scripted(*actions):
    """A fault hook answering the first requests with ``actions`` in order, then normally."""
    remaining = list(actions)

    def fault(request):
        return remaining.pop(0) if remaining else None

    return fault


def test_503_then_dropped_connection_still_delivers_every_record_once_with_one_key(pg, acme):
    with Receiver(fault=_scripted(503, "drop")) as receiver, dg.instance_for_test() as instance:
        config = two_provider_config(pg, str(acme / "lake"), receiver.url, max_records_per_batch=100)
        result = run_assets(
            config,
            instance,
            base_dir=str(acme),
            keys=["prequel/acme/acme-users", "prequel/acme/streams/acme-users-app"],
        )
        assert result.success
        records = receiver.store.records(stream_id="acme-users-app")
        assert sorted(int(r["record"]["id"]) for r in records) == list(range(1, 46))  # each exactly once
        assert [r.answered for r in receiver.requests] == [503, "dropped", 202]
        keys = {r.headers["Idempotency-Key"] for r in receiver.requests}
        assert len(keys) == 1 and keys == {json.loads(receiver.requests[-1].body)["batch_id"]}
        assert all(r.headers["Authorization"] == "Bearer t0ken-value" for r in receiver.requests)
        load = metadata_of(result, "prequel/acme/streams/acme-users-app")
        assert load["retries"] == 2 and load["requests"] == 3 and load["records_loaded"] == 45


def test_retry_after_is_honoured(pg, acme):
    slept: list[float] = []
    with Receiver(fault=_scripted((429, {"Retry-After": "2"}), (503, {"Retry-After": "0"}))) as receiver:
        config = load_config(
            two_provider_config(pg, str(acme / "lake"), receiver.url, max_records_per_batch=100), base_dir=str(acme)
        )
        run_extract(config, "acme-users")
        result = run_load(config, "acme-users-app", sleep=slept.append)
    assert result.counts.records_loaded == 45
    assert slept[0] == 2.0  # Retry-After: 2
    assert 0 <= slept[1] <= 0.1  # Retry-After: 0 means: use the backoff (0.05 s initial here)


def test_a_rejected_batch_goes_to_the_dead_letter_with_the_answer(pg, acme):
    with Receiver(fault=_scripted(None, (400, {}))) as receiver:  # second batch rejected for good
        config = load_config(two_provider_config(pg, str(acme / "lake"), receiver.url), base_dir=str(acme))
        run_extract(config, "acme-users")
        result = run_load(config, "acme-users-app")
        delivered = {r["record"]["id"] for r in receiver.store.records(stream_id="acme-users-app")}
    assert result.counts.records_loaded == 25 and result.counts.records_errored == 20
    dead = StreamState(LocalStore(acme / "lake"), "acme", "acme-users-app").read_dead_letters().to_pylist()
    assert len(dead) == 20 and all("HTTP 400" in d["reason"] for d in dead)
    dead_ids = {json.loads(d["record"])["id"] for d in dead}
    assert dead_ids.isdisjoint(delivered) and len(dead_ids | delivered) == 45  # every record: acked or kept


def test_an_endpoint_that_stays_down_dead_letters_then_stops_and_everything_arrives_later(pg, acme):
    # batch 0 is accepted, then every request fails until the retry budget of 2 batches in a row is spent
    down = {"on": False}

    def fault(request):
        if down["on"]:
            return 503
        down["on"] = True
        return None

    with Receiver(fault=fault) as receiver:
        raw = two_provider_config(
            pg, str(acme / "lake"), receiver.url, max_attempts=2, max_records_per_batch=5, max_failed_batches_in_a_row=2
        )
        config = load_config(raw, base_dir=str(acme))
        run_extract(config, "acme-users")
        with pytest.raises(DeliveryError, match="failed 2 batches in a row.*stay pending"):
            run_load(config, "acme-users-app")
        state = StreamState(LocalStore(acme / "lake"), "acme", "acme-users-app")
        dead = {json.loads(r)["id"] for r in state.read_dead_letters().column("record").to_pylist()}
        assert dead == {str(i) for i in range(6, 16)}  # batches 1 and 2, with the answer as reason
        assert all(
            "gave up after 2 attempts; last: HTTP 503" in r
            for r in state.read_dead_letters().column("reason").to_pylist()
        )
        first_ids = [json.loads(r.body)["batch_id"] for r in receiver.requests]

        receiver.fault = None  # the endpoint is back
        resumed = run_load(config, "acme-users-app")
        assert resumed.resumed and resumed.counts.batches_skipped_already_acked == 3
        assert resumed.counts.batches_sent == 6  # batches 3..8: the pending ones, nothing else
        resent = [json.loads(r.body)["batch_id"] for r in receiver.requests[len(first_ids) :]]
        assert set(resent).isdisjoint(first_ids)

        again = run_load(config, "acme-users-app", redeliver_dead_letters=True)
        assert again.counts.records_loaded == 10 and state.dead_letter_files() == []
        records = receiver.store.records(stream_id="acme-users-app")
    assert sorted(int(r["record"]["id"]) for r in records) == list(range(1, 46))  # every record exactly once


def test_schema_invalid_records_are_kept_with_their_violation(pg, acme):
    with Receiver() as receiver:
        raw = two_provider_config(pg, str(acme / "lake"), receiver.url)
        raw["streams"][0]["mappings"][1] = {  # email null for odd ids: violates `required`
            "target_field": "email",
            "field_type": "expression",
            "expression": {"expr": "IF(id / 2 == int(id / 2), email, nil)"},
        }
        config = load_config(raw, base_dir=str(acme))
        run_extract(config, "acme-users")
        result = run_load(config, "acme-users-app")
        delivered = receiver.store.records(stream_id="acme-users-app")
    assert result.counts.records_valid == 22 and result.counts.records_errored == 23
    assert all(int(r["record"]["id"]) % 2 == 0 for r in delivered) and len(delivered) == 22
    dead = StreamState(LocalStore(acme / "lake"), "acme", "acme-users-app").read_dead_letters().to_pylist()
    assert len(dead) == 23 and all("required field 'email' is null" in d["reason"] for d in dead)


def test_every_body_matches_the_published_envelope_schema(pg, acme):
    import jsonschema

    from prequel_dagster.delivery.receiver import check_envelope

    schema = json.loads(
        (Path(__file__).resolve().parents[1] / "prequel_dagster" / "schemas" / "batch_envelope.schema.json").read_text()
    )
    with Receiver() as receiver:
        config = load_config(two_provider_config(pg, str(acme / "lake"), receiver.url), base_dir=str(acme))
        run_extract(config, "acme-users")
        run_load(config, "acme-users-app")
    assert len(receiver.requests) == 3
    for request in receiver.requests:
        body = json.loads(request.body)
        jsonschema.validate(body, schema)
        assert check_envelope(body) is None
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["Idempotency-Key"] == body["batch_id"]
        assert body["provider_id"] == "acme" and body["stream_id"] == "acme-users-app"
