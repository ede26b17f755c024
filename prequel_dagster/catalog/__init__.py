"""The SQL catalog of resources created through the HTTP API, their secrets encrypted at rest."""
