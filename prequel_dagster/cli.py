"""``prequel-dagster``: demo, validate, test-transform, redeliver, housekeeping, keys, receiver, api."""

import argparse
import os
import socket
import sys
import time
from pathlib import Path

from .cli_config import UsageError, _load
from .config.errors import ConfigError, PrequelError
from .config.secrets import redact


def _print_error(exc: BaseException) -> None:
    print(f"error: {redact(str(exc))}", file=sys.stderr)


def _config_path(args: argparse.Namespace) -> Path:
    from .config.loading import find_config_path

    path = find_config_path(args.config)
    if path is None:
        raise UsageError("no config given, PREQUEL_CONFIG unset and no ./prequel.yaml")
    return path


def cmd_validate(args: argparse.Namespace) -> int:
    """Exit 0 if the config is valid, 1 if not, or if there is no config to check."""
    from .config.loading import CONFIG_ENV_VAR, DEFAULT_CONFIG_NAME, find_config_path, load_config

    path = find_config_path(args.config)
    if path is None:
        print(
            f"error: no config found: no CONFIG argument, {CONFIG_ENV_VAR} is not set, and there is no "
            f"{Path.cwd() / DEFAULT_CONFIG_NAME}; pass the config's path (prequel-dagster validate path/to/"
            f"{DEFAULT_CONFIG_NAME}) or set {CONFIG_ENV_VAR}",
            file=sys.stderr,
        )
        return 1
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(redact(str(exc)), file=sys.stderr)
        return 1
    print(
        f"{path}: OK — {len(config.providers)} providers, {len(config.sources)} sources, "
        f"{len(config.datasets)} datasets, {len(config.destinations)} destinations, {len(config.streams)} streams"
    )
    return 0


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def cmd_demo(args: argparse.Namespace) -> int:
    import dagster as dg

    from .builder import build_definitions
    from .config.loading import load_config
    from .delivery.receiver import Receiver, ReceiverStore
    from .demo import STATE_DIR, apply_changes, demo_dir, write_demo_data

    started = time.monotonic()
    root = Path.cwd()
    directory = demo_dir(root)
    config_path = write_demo_data(directory)
    if os.environ.get("DAGSTER_HOME"):  # the user's instance, as Dagster's docs set it up: the UI shows the runs
        instance = dg.DagsterInstance.get()
        where = f"the Dagster instance in $DAGSTER_HOME ({os.environ['DAGSTER_HOME']})"
    else:  # the repo's dagster.yaml points `dagster dev` here
        instance_dir = root / STATE_DIR / "dagster"
        instance_dir.mkdir(parents=True, exist_ok=True)
        instance_yaml = instance_dir / "dagster.yaml"
        if not instance_yaml.exists():
            instance_yaml.write_text("telemetry:\n  enabled: false\n")
        instance = dg.DagsterInstance.from_config(str(instance_dir))
        where = f"the local Dagster instance in {instance_dir.relative_to(root)}/ (set DAGSTER_HOME to use yours)"

    receiver = Receiver(ReceiverStore(str(directory / "received.db")), port=_free_port(args.port)).start()
    os.environ["PREQUEL_RECEIVER_URL"] = receiver.url
    print(f"prequel-dagster demo — files in {directory.relative_to(root)}/, receiver at {receiver.url}")
    print(f"runs are recorded in {where}\n")
    try:
        defs = build_definitions(load_config(config_path))
        job = defs.resolve_implicit_global_asset_job_def()
        for round_name, changes in (("initial load", None), ("after a day of changes", "apply")):
            if changes:
                described = apply_changes(directory)
                print("source changes: " + "; ".join(f"{p}: {d}" for p, d in described.items()))
            result = job.execute_in_process(
                instance=instance,
                tags={"prequel/demo": round_name.replace(" ", "_")},
                run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
                raise_on_error=False,
            )
            if not result.success:
                for event in result.all_events:
                    error = event.step_failure_data.error if event.is_step_failure else None
                    if error is not None:
                        print(f"error in {event.step_key}: {error.message.strip()}", file=sys.stderr)
                print(f"run {result.run_id} failed; see it with `dagster dev -w workspace.yaml`", file=sys.stderr)
                return 1
            _print_round(round_name, result)
    except PrequelError as exc:
        _print_error(exc)
        return 1
    finally:
        receiver.stop()

    print("\nreceived by the endpoint (provider, stream, batches, records, deleted_records):")
    for provider_id, stream_id, batches, records, deleted in receiver.store.summary():
        print(f"  {provider_id:8} {stream_id:18} {batches:4} {records:6} {deleted:4}")
    print(
        f"\ndone in {time.monotonic() - started:.1f}s. Open it in the Dagster UI (from this directory):\n"
        "  dagster dev -w workspace.yaml        # then http://127.0.0.1:3000 -> Assets, Runs\n"
        "To deliver from the UI too, keep a receiver running:  prequel-dagster receiver"
    )
    return 0


def _print_round(round_name: str, result) -> None:
    print(f"== {round_name} (run {result.run_id[:8]})")
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        meta = {k: v.value for k, v in mat.metadata.items()}
        key = mat.asset_key.path
        if "streams" in key:
            print(
                f"  load    {key[1]:8} {key[-1]:18} delivered {meta.get('records_loaded', 0):5} "
                f"(deletes {meta.get('records_deleted_sent', 0)}), errored {meta.get('records_errored', 0)}, "
                f"batches {meta.get('batches_sent', 0)}"
            )
        else:
            print(
                f"  extract {key[1]:8} {key[-1]:18} read {meta.get('records_processed', 0):5}: "
                f"new {meta.get('records_new_inserted', 0)}, updated {meta.get('records_existing_updated', 0)}, "
                f"deleted {meta.get('records_existing_deleted', 0)}, unchanged {meta.get('records_existing_unchanged', 0)}"
            )


def cmd_receiver(args: argparse.Namespace) -> int:
    from .delivery.receiver import serve

    public_key = Path(args.public_key).read_bytes() if args.public_key else None
    serve(Path(args.db), args.host, args.port, public_key)
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from .delivery.signing import generate_key_pair

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    private, public = generate_key_pair()
    private_path, public_path = out / "prequel_signing_key.pem", out / "prequel_signing_key.pub.pem"
    if private_path.exists() and not args.force:
        print(f"error: {private_path} exists; pass --force to replace it", file=sys.stderr)
        return 1
    private_path.write_bytes(private)
    private_path.chmod(0o600)
    public_path.write_bytes(public)
    print(
        f"wrote {private_path} (keep it secret) and {public_path} (give it to your endpoint).\n"
        f'Sign deliveries:   export PREQUEL_SIGNING_KEY="$(cat {private_path})"\n'
        '                   and in the destination: signing: {private_key: "${PREQUEL_SIGNING_KEY}"}\n'
        f"Verify at the receiver: prequel-dagster receiver --public-key {public_path}"
    )
    return 0


def cmd_redeliver(args: argparse.Namespace) -> int:
    from .engine import run_load

    if not args.record_id and not args.dead_letters:
        raise UsageError("pass --dead-letters, or one or more --record-id")
    config = _load(args)
    if args.stream_id not in {s.id for s in config.streams}:
        print(f"error: no stream with id '{args.stream_id}'", file=sys.stderr)
        return 1
    result = run_load(
        config, args.stream_id, record_ids=args.record_id or None, redeliver_dead_letters=args.dead_letters, log=print
    )
    c = result.counts
    print(f"{c.records_loaded} records delivered, {c.records_errored} errored, {c.records_not_found} ids not found")
    return 0 if c.records_errored == 0 else 3


def cmd_housekeeping(args: argparse.Namespace) -> int:
    from .lake.housekeeping import run_housekeeping

    config = _load(args)
    ids = [d.id for d in config.datalakes]
    if args.datalake:
        if args.datalake not in ids:
            raise UsageError(f"no datalake with id '{args.datalake}' (the config has: {', '.join(ids)})")
        ids = [args.datalake]
    problems = 0
    for datalake_id in ids:
        result = run_housekeeping(config, datalake_id, dry_run=args.dry_run, log=print)
        for kind, removed in result.removed.items():
            for path in removed.paths if args.dry_run else []:
                print(f"  would remove ({kind}): {path}")
        for problem in result.problems:
            print(f"error: {problem}", file=sys.stderr)
        problems += len(result.problems)
        if not args.dry_run:  # merge small data files too
            from .lake.compaction import compact_dataset
            from .stores import open_datalake

            storage = open_datalake(config.datalake(datalake_id), config)
            for dataset in config.datasets:
                chain = config.chain(dataset.id)
                if chain.datalake.id == datalake_id:
                    compact_dataset(storage, chain.provider.id, dataset.id, log=print)
    return 1 if problems else 0


def cmd_test_transform(args: argparse.Namespace) -> int:
    from .engine.preview import preview_stream

    try:
        config = _load(args)
        if config.is_data_stream(args.stream_id):  # which data rule drops each sample row
            from .cli_data_streams import test_transform_data_stream

            return test_transform_data_stream(config, args.stream_id, args.limit)
        if args.stream_id not in {s.id for s in config.streams}:
            raise PrequelError(f"no stream with id '{args.stream_id}'; `prequel-dagster validate` lists the config")
        preview = preview_stream(config, args.stream_id, limit=args.limit, record_ids=args.record_id)
    except PrequelError as exc:
        _print_error(exc)
        return 1
    for row in preview.rows:
        status = "ok     " if row.violation is None else "INVALID"
        print(f"{status} {row.json}")
        if row.violation:
            print(f"        {row.violation}")
    print(f"\n{len(preview.rows)} records from the lake, {preview.invalid} violate the destination's record_schema")
    return 0 if preview.invalid == 0 else 3


def cmd_api(args: argparse.Namespace) -> int:
    from .api.server import serve

    serve(args.host, args.port, workers=args.workers, config_path=args.config, dagster_url=args.dagster_url)
    return 0


def _catalog():  # -> Catalog
    from .catalog.store import Catalog

    catalog = Catalog.open()
    assert catalog is not None
    return catalog


def cmd_api_keys_create(args: argparse.Namespace) -> int:
    catalog = _catalog()
    if args.provider is not None:
        from .catalog.entries import load_with_catalog
        from .config.loading import find_config_path

        found = load_with_catalog(find_config_path(args.config))
        if found is None or args.provider not in {p.id for p in found[0].providers}:
            raise UsageError(f"no provider with id '{args.provider}' in the config or the catalog")
    key, text = catalog.create_key(args.provider, args.label)
    scope = f"provider '{key.provider_id}'" if key.provider_id else "the company (every provider)"
    print(f"API key {key.id} for {scope}. It is shown once; store it now (send it as X-API-KEY):")
    print(text)
    return 0


def cmd_api_keys_list(args: argparse.Namespace) -> int:
    for key in _catalog().keys():
        state = f"revoked {key.revoked_at}" if key.revoked_at else "active"
        print(f"{key.id}  {key.provider_id or '(company)':20}  {state:32}  created {key.created_at}  {key.label or ''}")
    return 0


def cmd_api_keys_revoke(args: argparse.Namespace) -> int:
    if not _catalog().revoke_key(args.key_id):
        raise UsageError(f"no active API key with id '{args.key_id}' (prequel-dagster api keys list)")
    print(f"revoked {args.key_id}: requests with it now get 401")
    return 0


def cmd_api_rotate_key(args: argparse.Namespace) -> int:
    changed = _catalog().rotate_secrets()
    print(f"sealed the secrets of {changed} catalog rows again with the first key of PREQUEL_CATALOG_KEY")
    return 0


def _push_source(args: argparse.Namespace):  # -> (Catalog, PushSource)
    from .catalog import push_tokens

    config = _load(args)
    try:
        source = config.source(args.source_id)
    except KeyError:
        raise UsageError(f"no source with id '{args.source_id}' in the config or the catalog") from None
    if source.vendor != "import_api":
        raise UsageError(f"source '{source.id}' is a {source.vendor} source; push tokens are for vendor: import_api")
    catalog = _catalog()
    return catalog, push_tokens.push_source(catalog, source.id, source.provider_id)


def cmd_push_tokens_create(args: argparse.Namespace) -> int:
    from .catalog import push_tokens

    catalog, source = _push_source(args)
    try:
        token_id, token = push_tokens.create_token(catalog, source)
    except push_tokens.TooManyTokens as exc:
        raise UsageError(f"{exc} (prequel-dagster push tokens revoke {args.source_id} TOKEN_ID)") from None
    print(f"access token {token_id} for source '{args.source_id}' (client_id {source.id}); shown once:")
    print(token)
    return 0


def cmd_push_tokens_list(args: argparse.Namespace) -> int:
    from .catalog import push_tokens

    catalog, source = _push_source(args)
    ids = push_tokens.token_ids(catalog, source.source_id)
    print(f"source '{args.source_id}' (client_id {source.id}): active tokens {', '.join(map(str, ids)) or '(none)'}")
    return 0


def cmd_push_tokens_revoke(args: argparse.Namespace) -> int:
    from .catalog import push_tokens

    catalog, source = _push_source(args)
    if not push_tokens.revoke_token(catalog, source.source_id, args.token_id):
        raise UsageError(f"no active token {args.token_id} for source '{args.source_id}'")
    print(f"revoked token {args.token_id}: pushes with it now get 401")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prequel-dagster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the main job on embedded defaults (SQLite, local lake, receiver)")
    p.add_argument("--port", type=int, default=8900, help="receiver port (a free one if taken)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("validate", help="check a config and print every error with its path")
    p.add_argument("config", nargs="?", help="config file (default: $PREQUEL_CONFIG or ./prequel.yaml)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("test-transform", help="apply a stream's mappings to sample records from the lake")
    p.add_argument("stream_id")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--record-id", action="append", help="a record (primary key value) to show; repeatable")
    p.add_argument("--config", help="config file (default: $PREQUEL_CONFIG or ./prequel.yaml)")
    p.set_defaults(func=cmd_test_transform)

    p = sub.add_parser("redeliver", help="deliver a stream's dead letters, or chosen records, again")
    p.add_argument("stream_id")
    p.add_argument("--dead-letters", action="store_true", help="every record in the stream's dead letter")
    p.add_argument("--record-id", action="append", help="a record (primary key value) to send again; repeatable")
    p.add_argument("--config", help="config file (default: $PREQUEL_CONFIG or ./prequel.yaml)")
    p.set_defaults(func=cmd_redeliver)

    p = sub.add_parser("housekeeping", help="apply retention_window_days and remove the leftovers of crashed runs")
    p.add_argument("--datalake", help="one datalake id (default: every datalake)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    p.add_argument("--config", help="config file (default: $PREQUEL_CONFIG or ./prequel.yaml)")
    p.set_defaults(func=cmd_housekeeping)

    p = sub.add_parser("keys", help="request-signing keys")
    keys = p.add_subparsers(dest="keys_command", required=True)
    g = keys.add_parser("generate", help="write a new RSA key pair for X-Prequel-Webhook-Signature")
    g.add_argument("--out", default=".", help="directory for the two PEM files")
    g.add_argument("--force", action="store_true")
    g.set_defaults(func=cmd_keys_generate)

    p = sub.add_parser("receiver", help="run the reference Batch API endpoint")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8900)
    p.add_argument("--db", default="received.db", help="SQLite file to store batches in")
    p.add_argument("--public-key", help="PEM public key: verify X-Prequel-Webhook-Signature, 401 if wrong")
    p.set_defaults(func=cmd_receiver)

    p = sub.add_parser("api", help="serve Prequel's /import/* management API (and manage its keys)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8800)
    p.add_argument("--config", help="YAML config served with the catalog (default: $PREQUEL_CONFIG or ./prequel.yaml)")
    p.add_argument(
        "--dagster-url", help="the Dagster webserver (default: $PREQUEL_DAGSTER_URL or http://127.0.0.1:3000)"
    )
    p.add_argument(
        "--workers", type=int, default=1, help="processes serving the one port (the catalog is all they share)"
    )
    p.set_defaults(func=cmd_api)
    api = p.add_subparsers(dest="api_command")
    k = api.add_parser("keys", help="API keys: create, list, revoke")
    keys_sub = k.add_subparsers(dest="keys_command", required=True)
    c = keys_sub.add_parser("create", help="a new key, printed once (alone on the last line)")
    c.add_argument("--provider", help="scope the key to this provider's resources")
    c.add_argument("--label", help="a note to recognise the key by")
    c.add_argument("--config", help="YAML config (to check --provider exists)")
    c.set_defaults(func=cmd_api_keys_create)
    c = keys_sub.add_parser("list", help="every key: id, scope, state (never the key itself)")
    c.set_defaults(func=cmd_api_keys_list)
    c = keys_sub.add_parser("revoke", help="revoke a key by its id")
    c.add_argument("key_id")
    c.set_defaults(func=cmd_api_keys_revoke)
    c = api.add_parser("rotate-key", help="re-seal stored secrets with the first key of PREQUEL_CATALOG_KEY")
    c.set_defaults(func=cmd_api_rotate_key)

    p = sub.add_parser("push", help="Import API sources (vendor: import_api): their access tokens")
    push_sub = p.add_subparsers(dest="push_command", required=True)
    t = push_sub.add_parser("tokens", help="access tokens: create (at most two live), list, revoke")
    tokens_sub = t.add_subparsers(dest="tokens_command", required=True)
    for name, func, help_text in (
        ("create", cmd_push_tokens_create, "a new token, printed once (alone on the last line)"),
        ("list", cmd_push_tokens_list, "the ids of the source's live tokens"),
        ("revoke", cmd_push_tokens_revoke, "revoke a token by its id"),
    ):
        c = tokens_sub.add_parser(name, help=help_text)
        c.add_argument("source_id")
        if name == "revoke":
            c.add_argument("token_id", type=int)
        c.add_argument("--config", help="YAML config (default: $PREQUEL_CONFIG or ./prequel.yaml)")
        c.set_defaults(func=func)

    from .cli_data_streams import register

    register(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except UsageError as exc:
        _print_error(exc)
        return 2
    except PrequelError as exc:
        _print_error(exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
