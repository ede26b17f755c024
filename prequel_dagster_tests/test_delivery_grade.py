"""Delivery at Prequel grade against a real loopback endpoint: every record acknowledged or dead-lettered
with its reason, and re-delivery empties the dead letter."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import dagster as dg
import pytest

from prequel_dagster.config import ConfigError, load_config
from prequel_dagster.delivery.receiver import Receiver
from prequel_dagster.delivery.signing import generate_key_pair
from prequel_dagster.delivery.webhook import TokenBucket
from prequel_dagster.engine import run_extract, run_load
from prequel_dagster.lake.deliveries import StreamState
from prequel_dagster.stores import LocalStore

from .dagster_helpers import run_assets
from .pg_helpers import create_provider_db, two_provider_config
from .test_delivery_ids import local_config

N = 45
ALL_IDS = {str(i) for i in range(1, N + 1)}


@pytest.fixture
def acme(pg, tmp_path, monkeypatch):
    password = "acme-" + os.urandom(6).hex()
    for k, v in {"ACME_PG_PASSWORD": password, "GLOBEX_PG_PASSWORD": "unused", "APP_TOKEN": "t0ken-value"}.items():
        monkeypatch.setenv(k, v)
    create_provider_db(pg, "acme", users=N, domain="acme.test", password=password)
    return tmp_path


def _setup(pg, tmp, receiver, **webhook):
    config = load_config(two_provider_config(pg, str(tmp / "lake"), receiver.url, **webhook), base_dir=str(tmp))
    run_extract(config, "acme-users")
    return config


def _state(tmp) -> StreamState:
    return StreamState(LocalStore(tmp / "lake"), "acme", "acme-users-app")


def _received_ids(receiver) -> list[str]:
    return [r["record"]["id"] for r in receiver.store.records(stream_id="acme-users-app")]


def assert_every_record_accounted_for(receiver, tmp, config):
    """Acknowledged or in the dead letter with a reason; then re-delivery empties the dead letter."""
    delivered = set(_received_ids(receiver))
    dead = _state(tmp).read_dead_letters().to_pylist()
    assert all(d["reason"] for d in dead)
    assert delivered | {d["record_id"] for d in dead} == ALL_IDS
    receiver.fault = None
    run_load(config, "acme-users-app", redeliver_dead_letters=True)
    assert _state(tmp).dead_letter_files() == []
    assert set(_received_ids(receiver)) == ALL_IDS


def test_slow_answers_past_the_timeout_are_retried_and_stored_once(pg, acme):
    with Receiver(fault=lambda req: ("sleep", 4) if len(receiver.requests) == 1 else None) as receiver:
        config = _setup(pg, acme, receiver, timeout_seconds=1, max_records_per_batch=100)
        result = run_load(config, "acme-users-app")
        deadline = time.monotonic() + 30
        while receiver.in_flight and time.monotonic() < deadline:  # the slow first answer stores the batch too
            time.sleep(0.1)
        assert result.counts.retries >= 1 and result.counts.records_loaded == N
        keys = {r.headers["Idempotency-Key"] for r in receiver.requests}
        assert len(receiver.requests) == result.counts.requests and len(keys) == 1
        assert sorted(_received_ids(receiver), key=int) == sorted(ALL_IDS, key=int)  # stored once
        assert_every_record_accounted_for(receiver, acme, config)


def test_413_halves_the_batch_and_retries(pg, acme):
    def too_large(request):
        body = json.loads(request.body)
        return 413 if len(body["records"]) > 10 else None

    with Receiver(fault=too_large) as receiver:
        config = _setup(pg, acme, receiver, max_records_per_batch=40)
        result = run_load(config, "acme-users-app")
        sizes = [len(json.loads(r.body)["records"]) for r in receiver.requests if r.answered == 202]
        assert sum(sizes) == N and max(sizes) <= 10
        assert result.counts.batches_split >= 3 and result.counts.records_errored == 0
        ids = [json.loads(r.body)["batch_id"] for r in receiver.requests if r.answered == 202]
        assert len(ids) == len(set(ids))  # halves get their own deterministic ids
        assert_every_record_accounted_for(receiver, acme, config)


def test_one_400_among_many_dead_letters_that_batch_only(pg, acme):
    with Receiver(fault=lambda req: 400 if len(receiver.requests) == 3 else None) as receiver:
        config = _setup(pg, acme, receiver, max_records_per_batch=5)
        result = run_load(config, "acme-users-app")
        assert result.counts.batches_rejected == 1 and result.counts.records_errored == 5
        assert result.counts.records_loaded == N - 5
        dead = _state(acme).read_dead_letters().to_pylist()
        assert {d["record_id"] for d in dead} == {"11", "12", "13", "14", "15"}
        assert all(d["reason"].startswith("HTTP 400") for d in dead)
        assert_every_record_accounted_for(receiver, acme, config)


def test_signed_requests_verify_at_the_reference_receiver(pg, acme, monkeypatch):
    private, public = generate_key_pair(2048)
    _, other_public = generate_key_pair(2048)
    monkeypatch.setenv("SIGNING_KEY", private.decode())
    raw_kwargs = {"max_records_per_batch": 100, "gzip": True}
    with Receiver(public_key=other_public) as receiver:  # the endpoint has the wrong public key: 401
        raw = two_provider_config(pg, str(acme / "lake"), receiver.url, **raw_kwargs)
        raw["destinations"][0]["signing"] = {"private_key": "${SIGNING_KEY}"}
        config = load_config(raw, base_dir=str(acme))
        run_extract(config, "acme-users")
        rejected = run_load(config, "acme-users-app")
        assert rejected.counts.records_errored == N and receiver.requests[0].answered == 401
        assert "signature" in _state(acme).read_dead_letters().column("reason")[0].as_py()
        receiver.public_key = public  # the right key: redelivery verifies and empties the dead letter
        run_load(config, "acme-users-app", redeliver_dead_letters=True)
        request = receiver.requests[-1]
        assert request.answered == 202 and request.headers["Content-Encoding"] == "gzip"
        for header in ("X-Prequel-Webhook-Timestamp", "X-Prequel-Webhook-Signature", "X-Prequel-Webhook-Digest"):
            assert header in request.headers
        assert set(_received_ids(receiver)) == ALL_IDS and _state(acme).dead_letter_files() == []
    secret_body = private.decode().splitlines()[1]
    assert secret_body not in str(rejected.counts) and secret_body not in str(raw["destinations"][0])


def test_token_bucket_spends_records_at_the_configured_rate():
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(1200, capacity=20, clock=lambda: now[0])  # 20 records a second, bursts of 20
    for _ in range(20):
        bucket.take(5, sleep)
    assert sum(slept) == pytest.approx((100 - 20) / 20)  # the burst is free, the rest at 20/s
    assert all(s <= 0.25 + 1e-9 for s in slept)


def test_pacing_max_records_per_minute_and_max_concurrency_are_observed(pg, acme, tmp_path):
    # 6000 records/minute = 100/s with bursts of 100: 400 records take at least 3 s, and no second holds more
    # than the burst plus a second's worth (and one batch in flight)
    with Receiver() as receiver:
        config = local_config(
            tmp_path, "lake", receiver, {i: f"u{i}@x" for i in range(400)}, per_minute=6000, max_records_per_batch=10
        )
        run_extract(config, "users")
        started = time.monotonic()
        run_load(config, "users-app")
        elapsed = time.monotonic() - started
        arrivals = [r.at for r in receiver.requests]
    assert elapsed >= 2.9 and len(arrivals) == 40
    for i, t in enumerate(arrivals):
        in_window = sum(10 for u in arrivals[i:] if u - t <= 1.0)
        assert in_window <= 100 + 100 + 10

    with Receiver(fault=lambda req: ("sleep", 0.2)) as receiver:
        raw = two_provider_config(pg, str(acme / "lake2"), receiver.url, max_records_per_batch=3)
        raw["destinations"][0]["max_concurrency"] = 3
        config = load_config(raw, base_dir=str(acme))
        run_extract(config, "acme-users")
        result = run_load(config, "acme-users-app")
        assert result.counts.records_loaded == N
        assert receiver.max_in_flight == 3  # concurrent, and never more than allowed
        assert sorted(_received_ids(receiver), key=int) == sorted(ALL_IDS, key=int)


LOAD_IN_A_CHILD = textwrap.dedent("""
    import json, sys
    from prequel_dagster.config import load_config
    from prequel_dagster.engine import run_load

    run_load(load_config(json.loads(sys.argv[1]), base_dir=sys.argv[2]), "acme-users-app")
""")


def test_kill_9_mid_load_then_resume_sends_only_unacknowledged_batches_with_the_same_ids(pg, acme):
    """The endpoint answers three batches, then kill -9 hits the loader while the fourth is in flight."""
    child: dict[str, subprocess.Popen] = {}

    def kill_on_fourth(req):
        if len(receiver.requests) == 4 and "proc" in child:
            os.kill(child["proc"].pid, signal.SIGKILL)
            child["proc"].wait()
            return "drop"  # never acknowledged
        return None

    with Receiver(fault=kill_on_fourth) as receiver:
        raw = two_provider_config(pg, str(acme / "lake"), receiver.url, max_records_per_batch=5)
        config = load_config(raw, base_dir=str(acme))
        run_extract(config, "acme-users")
        child["proc"] = subprocess.Popen(
            [sys.executable, "-c", LOAD_IN_A_CHILD, json.dumps(raw), str(acme)],
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        assert child["proc"].wait(timeout=120) == -signal.SIGKILL, child["proc"].stderr.read()[-2000:]
        first = [json.loads(r.body) for r in receiver.requests]
        assert len(first) == 4
        acked, unanswered = first[:3], first[3]
        receiver.fault = None
        result = run_load(config, "acme-users-app")
        after = [json.loads(r.body) for r in receiver.requests[4:]]
    assert result.resumed and result.load_id == acked[0]["load_id"]
    assert result.counts.batches_skipped_already_acked == 3 and result.counts.batches_sent == 6
    assert {b["batch_id"] for b in acked}.isdisjoint(b["batch_id"] for b in after)  # acknowledged: never again
    assert after[0]["batch_id"] == unanswered["batch_id"] and after[0]["records"] == unanswered["records"]
    assert all(b["load_id"] == acked[0]["load_id"] for b in after)
    ids = sorted(int(r["id"]) for b in acked + after for r in b["records"])
    assert ids == list(range(1, N + 1))  # nothing lost, nothing acknowledged sent twice


def test_webhook_record_with_templates_sends_one_request_per_record(pg, acme):
    with Receiver() as receiver:
        raw = two_provider_config(pg, str(acme / "lake"), receiver.url)
        raw["destinations"][0] = {
            "id": "app",
            "name": "app",
            "type": "webhook_record",
            "max_records_per_minute": 1_000_000,
            "record_schema": raw["destinations"][0]["record_schema"],
            "webhook_record": {
                "max_concurrency": 2,
                "request_template": {
                    "method": "PUT",
                    "uri": receiver.url
                    + "/{{.ProviderID}}/users/{{.Record.id}}?provider_id={{.ProviderID}}&deleted={{.IsDeleted}}",
                    "headers": {"X-Email": "{{.Record.email}}", "Authorization": "Bearer ${APP_TOKEN}"},
                    "body": '{"payload": {{.Record.AsJson}}, "deleted": {{.IsDeleted}}}',
                },
            },
        }
        config = load_config(raw, base_dir=str(acme))
        run_extract(config, "acme-users")
        result = run_load(config, "acme-users-app")
        assert result.counts.records_loaded == N and len(receiver.requests) == N
        seven = next(r for r in receiver.requests if r.path.startswith("/acme/users/7?"))
        assert seven.method == "PUT" and seven.headers["X-Email"] == "u7@acme.test"
        assert seven.path == "/acme/users/7?provider_id=acme&deleted=false"
        assert json.loads(seven.body) == {
            "payload": {"id": "7", "email": "u7@acme.test", "full_name": "First7 Last7", "balance": 7.5},
            "deleted": False,
        }
        assert len({r.headers["Idempotency-Key"] for r in receiver.requests}) == N


def test_batch_headers_can_use_the_first_record_and_template_errors_name_their_position(pg, acme):
    with Receiver() as receiver:
        raw = two_provider_config(pg, str(acme / "lake"), receiver.url, max_records_per_batch=50)
        raw["destinations"][0]["webhook_batch"]["request_template"]["headers"]["X-First"] = "{{.Records[0].email}}"
        config = load_config(raw, base_dir=str(acme))
        run_extract(config, "acme-users")
        run_load(config, "acme-users-app")
        assert receiver.requests[0].headers["X-First"] == "u1@acme.test"
    raw["destinations"][0]["webhook_batch"]["request_template"]["uri"] = "http://h/{{.Record.id}}"
    raw["destinations"][0]["webhook_batch"]["request_template"]["headers"]["X-Bad"] = "v {{ .Nope }}"
    with pytest.raises(ConfigError) as info:
        load_config(raw, base_dir=str(acme))
    issues = [str(i) for i in info.value.issues]
    assert (
        "destinations[0].webhook_batch.request_template.uri: '{{.Record.id}}' at position 10 needs one record per request (type: webhook_record)"
        in issues
    )
    assert any(
        i.startswith(
            "destinations[0].webhook_batch.request_template.headers.X-Bad: unsupported template action '{{.Nope}}' at position 3"
        )
        for i in issues
    )


def test_dagster_checks_and_launchpad_redelivery(pg, acme):
    with Receiver(fault=lambda req: 422 if len(receiver.requests) == 1 else None) as receiver:
        raw = two_provider_config(pg, str(acme / "lake"), receiver.url, max_records_per_batch=20)
        raw["streams"][0]["dead_letter_check"] = "error"
        with dg.instance_for_test() as instance:
            result = run_assets(
                raw,
                instance,
                base_dir=str(acme),
                keys=["prequel/acme/acme-users", "prequel/acme/streams/acme-users-app"],
            )
            checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
            assert checks["dead_letters_empty"].passed is False
            assert checks["dead_letters_empty"].severity == dg.AssetCheckSeverity.ERROR
            assert checks["dead_letters_empty"].metadata["dead_letter_records"].value == 20
            assert checks["record_schema_conformance"].passed is True

            from prequel_dagster import build_definitions

            defs = build_definitions(load_config(raw, base_dir=str(acme)))
            job = defs.resolve_implicit_global_asset_job_def()
            key = dg.AssetKey.from_user_string("prequel/acme/streams/acme-users-app")
            op = "load__acme__app"  # a provider's loads to one destination share an op
            redo = job.execute_in_process(
                instance=instance,
                asset_selection=[key],
                run_config={"ops": {op: {"config": {"redeliver_dead_letters": True}}}},
            )
            checks = {e.check_name: e for e in redo.get_asset_check_evaluations()}
            assert checks["dead_letters_empty"].passed is True
            one = job.execute_in_process(
                instance=instance, asset_selection=[key], run_config={"ops": {op: {"config": {"record_ids": ["7"]}}}}
            )
            assert one.success
    assert set(_received_ids(receiver)) == ALL_IDS
    assert _received_ids(receiver).count("7") == 2  # sent again on request
