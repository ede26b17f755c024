# The code location's image, for Kubernetes (deploy/helm/values.yaml) or any container platform:
# `dagster code-server start` serving prequel_dagster.definitions on port 4000, and the image every
# run pod starts from (K8sRunLauncher). The `k8s` extra is the `postgres` one (dagster,
# dagster-webserver and dagster-postgres of one Dagster release, psycopg2) plus dagster-k8s of the
# same release: a run pod loads the instance, whose storage is PostgreSQL and launcher dagster-k8s's.
#
#   docker build -t registry.example.com/prequel-dagster:0.1.0 .
#
# The config comes at run time: PREQUEL_CONFIG names a prequel.yaml (a ConfigMap in the Helm values),
# and the secrets its ${...} name come from the environment.

# The Import API's native proof of batches (Rust, no dependencies): push/native.py loads it.
FROM rust:1-slim AS native
WORKDIR /src
COPY native/push_proof ./native/push_proof
RUN cargo build --release --offline --manifest-path native/push_proof/Cargo.toml

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    DAGSTER_DISABLE_TELEMETRY=1

WORKDIR /opt/prequel
COPY pyproject.toml README.md ./
COPY prequel_dagster ./prequel_dagster
COPY --from=native /src/native/push_proof/target/release/libprequel_push_proof.so ./prequel_dagster/push/
RUN pip install '.[k8s]' \
    && useradd --uid 10001 --create-home prequel \
    && mkdir -p "$DAGSTER_HOME" \
    && chown prequel "$DAGSTER_HOME"
USER prequel

EXPOSE 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "prequel_dagster.definitions", "--location-name", "prequel_dagster"]
