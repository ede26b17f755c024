import dagster as dg

from prequel_dagster import build_definitions, load_config


def run_assets(
    config_dict: dict,
    instance: dg.DagsterInstance,
    *,
    base_dir: str,
    keys: list[str] | None = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """Materialize every asset (or the given ``a/b/c`` keys) through Dagster, in process."""
    defs = build_definitions(load_config(config_dict, base_dir=base_dir))
    job = defs.resolve_implicit_global_asset_job_def()
    selection = [dg.AssetKey.from_user_string(k) for k in keys] if keys else None
    return job.execute_in_process(instance=instance, asset_selection=selection, raise_on_error=raise_on_error)


def metadata_of(result: dg.ExecuteInProcessResult, key: str) -> dict:
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat.asset_key.to_user_string() == key:
            return {k: v.value for k, v in mat.metadata.items()}
    raise AssertionError(f"no materialization of {key}")
