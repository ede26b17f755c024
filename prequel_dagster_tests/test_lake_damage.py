"""A damaged lake file is named with what to do, never a KeyError; a torn ack-log line is not an ack.

Damage is made the way it happens: a file truncated, edited by hand or left by another tool, in a
real local lake, with a real endpoint on loopback.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prequel_dagster.config import load_config
from prequel_dagster.config.errors import DeliveryError
from prequel_dagster.delivery.receiver import Receiver
from prequel_dagster.engine import run_extract, run_load
from prequel_dagster.lake.deliveries import LoadPlan, StreamState
from prequel_dagster.lake.lake_files import CorruptLakeFile
from prequel_dagster.stores import LocalStore

from .test_delivery_ids import local_config

ROWS = 12


def config_for(tmp_path: Path, receiver: Receiver):
    """The shared one-provider config (``test_delivery_ids.local_config``), written to prequel.yaml."""
    rows = {i: f"u{i}@x.test" for i in range(ROWS)}
    raw = local_config(tmp_path, "lake", receiver, rows, max_records_per_batch=4, as_dict=True)
    (tmp_path / "prequel.yaml").write_text(json.dumps(raw))
    return load_config(tmp_path / "prequel.yaml")


def lake_file(tmp_path: Path, folder: str) -> Path:
    (path,) = sorted((tmp_path / "lake").glob(f"**/{folder}/*.json"))
    return path


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda text: text[: len(text) // 2], "is not valid JSON"),
        (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "files"}), "'files' is missing"),
        (lambda text: json.dumps({**json.loads(text), "files": [{"rows": 1}]}), "an entry is malformed"),
        (lambda text: "[]", "is not a JSON object"),
    ],
)
def test_a_damaged_commit_manifest_is_named_with_the_fix(tmp_path, damage, problem):
    with Receiver() as receiver:
        config = config_for(tmp_path, receiver)
        run_extract(config, "users")
        manifest = lake_file(tmp_path, "_commits")
        manifest.write_text(damage(manifest.read_text()))
        for action in (lambda: run_extract(config, "users"), lambda: run_load(config, "users-app")):
            with pytest.raises(CorruptLakeFile) as info:
                action()
            message = str(info.value)
            assert "commit manifest" in message and manifest.name in message and problem in message
            assert "move it" in message  # what to do


def test_test_transform_names_the_damaged_file_not_a_missing_stream(tmp_path):
    with Receiver() as receiver:
        config = config_for(tmp_path, receiver)
        run_extract(config, "users")
    manifest = lake_file(tmp_path, "_commits")
    manifest.write_text(json.dumps({k: v for k, v in json.loads(manifest.read_text()).items() if k != "files"}))
    cli = [
        sys.executable,
        "-m",
        "prequel_dagster.cli",
        "test-transform",
        "users-app",
        "--config",
        str(tmp_path / "prequel.yaml"),
    ]
    done = subprocess.run(cli, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "'files' is missing" in done.stderr and "no stream" not in done.stderr


def test_damaged_delivery_marker_plan_and_ack_log_are_named(tmp_path):
    with Receiver() as receiver:
        config = config_for(tmp_path, receiver)
        run_extract(config, "users")
        run_load(config, "users-app")
        marker = lake_file(tmp_path, "_deliveries")
        good = marker.read_text()
        marker.write_text('{"through_commit": "1"}')
        with pytest.raises(CorruptLakeFile, match="delivery marker .* 'through_commit' has the wrong type"):
            run_load(config, "users-app")
        marker.write_text(good)

        state = StreamState(LocalStore(tmp_path / "lake"), "acme", "users-app")
        plan_file = Path(state.storage.full_path(state.plan_path))
        plan_file.parent.mkdir(parents=True, exist_ok=True)
        plan_file.write_text('{"load_id": "x", "from_commit": 0')
        with pytest.raises(CorruptLakeFile, match="pending load plan .* not valid JSON.*Delete it"):
            run_load(config, "users-app")
        plan = LoadPlan("L1", 0, 1)
        state.save_plan(plan)
        ack_log = Path(state.storage.full_path(state.ack_log_path("L1")))
        ack_log.write_text("0\n1\nrm -rf\n2")
        with pytest.raises(CorruptLakeFile, match=r"ack log .* line 3 \('rm -rf'\) is not a batch key"):
            run_load(config, "users-app")
        ack_log.write_text("0\n99\n")  # a batch this load never has (3 batches of 4)
        with pytest.raises(DeliveryError, match="batch 99 on record but only 3 batches"):
            run_load(config, "users-app")


def test_a_torn_last_ack_line_is_not_an_acknowledgement(tmp_path):
    with Receiver() as receiver:
        config = config_for(tmp_path, receiver)
        run_extract(config, "users")
        state = StreamState(LocalStore(tmp_path / "lake"), "acme", "users-app")
        plan = LoadPlan("L1", 0, 1)
        state.save_plan(plan)
        # batch 0 acknowledged and on record; batch 2's line torn mid-write by a crash: not on record
        Path(state.storage.full_path(state.ack_log_path("L1"))).write_text("0\n2")
        result = run_load(config, "users-app")
        sent = [json.loads(r.body)["records"] for r in receiver.requests]
    assert result.resumed and result.counts.batches_skipped_already_acked == 1
    assert sorted(r["id"] for batch in sent for r in batch) == list(range(4, ROWS))  # batches 1 and 2 sent
