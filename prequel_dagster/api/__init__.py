"""The HTTP service: Prequel's /import/* management API over the catalog, driving Dagster through its GraphQL API."""
