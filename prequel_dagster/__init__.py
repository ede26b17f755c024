"""prequel_dagster."""
