import os

os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

import pytest

from prequel_dagster.delivery.receiver import Receiver

from .servers import postgres_server


@pytest.fixture(scope="session")
def pg():
    with postgres_server() as server:
        yield server


@pytest.fixture
def receiver():
    with Receiver() as r:
        yield r


@pytest.fixture(scope="session")
def s3():
    from .servers import seaweedfs_server

    with seaweedfs_server() as server:
        yield server


@pytest.fixture(scope="session")
def gcs():
    from .servers import fake_gcs_server

    with fake_gcs_server() as server:
        yield server


@pytest.fixture(scope="session")
def azurite():
    from .servers import azurite_server

    with azurite_server() as server:
        yield server


@pytest.fixture(scope="session")
def sshd():
    from .servers import sshd_server

    with sshd_server() as server:
        yield server
