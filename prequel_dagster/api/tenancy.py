"""What a provider's key may configure: sources that reach the provider's own systems with the
provider's own credentials, never the API machine's files, identity or local services.

The company's key may use anything the YAML config may (its own machine's credentials included).
"""

import ipaddress
from typing import Any

from ..config.errors import ConfigIssue
from ..config.models import Source

LOCAL_VENDORS = ("sqlite", "local")
"""Vendors that read files on the API's own machine."""
MACHINE_IDENTITY = {
    "default_credentials": "the API machine's own cloud credentials",
    "aws_iam_role": "a role assumed with the API machine's own AWS credentials",
    "gcp_service_account_role": "impersonation by the API machine's own Google identity",
    "federated_gcp_service_account_role": "impersonation by the API machine's own Google identity",
}
"""Auth methods that act as the machine the API and its runs execute on."""
EXPLICIT = {
    "s3": "aws_access_keys",
    "s3_compatible": "aws_access_keys",
    "gcs": "gcp_service_account_key",
    "bigquery": "gcp_service_account_key",
    "redshift": "password_auth or aws_access_keys",
    "redshift_serverless": "password_auth or aws_access_keys",
}
_HOST_FIELDS = ("host", "bucket_host", "endpoint")


def tenant_source_issues(source: Source) -> list[ConfigIssue]:
    """Why a provider's key may not save (or test) this source; empty when it may."""
    vendor = source.vendor
    if vendor in LOCAL_VENDORS:
        return [
            ConfigIssue(
                "source.vendor", f"'{vendor}' reads files on the API's own machine; only the company's key may use it"
            )
        ]
    block = getattr(source, vendor, None)
    if block is None:
        return []
    issues = []
    method = getattr(block, "auth_method", None)
    if method in MACHINE_IDENTITY:
        issues.append(
            ConfigIssue(
                f"source.{vendor}.auth_method",
                f"'{method}' would use {MACHINE_IDENTITY[method]}; a provider's key must give the provider's own "
                f"credentials ({EXPLICIT.get(vendor, 'another auth_method')}), or ask the company to create this source",
            )
        )
    for field in _HOST_FIELDS:
        issues.extend(_host_issues(f"source.{vendor}.{field}", getattr(block, field, None)))
    tunnel = getattr(block, "ssh_tunnel", None)
    if getattr(block, "use_ssh_tunnel", False) and tunnel is not None and not isinstance(tunnel, dict):
        issues.extend(_host_issues(f"source.{vendor}.ssh_tunnel.ssh_tunnel_host", tunnel.ssh_tunnel_host))
    auth = getattr(block, "password_auth", None)
    if auth is not None and not isinstance(auth, dict):
        if not auth.username.strip():
            issues.append(ConfigIssue(f"source.{vendor}.password_auth.username", "must not be empty"))
        if not auth.password.template:  # libpq would read the API machine's ~/.pgpass
            issues.append(ConfigIssue(f"source.{vendor}.password_auth.password", "must not be empty"))
    return issues


def _host_issues(where: str, host: Any) -> list[ConfigIssue]:
    """A host the API machine would reach on itself: a Unix socket, loopback, link-local (the cloud
    metadata service) or an unspecified address. Names are not resolved here: the workers' network
    policy is the fence for names that resolve inward."""
    if not isinstance(host, str) or not host:
        return []
    text = host.strip().lower()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0] if not text.startswith("/") else text
    if text.startswith("/") or text.startswith("@"):
        return [ConfigIssue(where, "a Unix socket on the API's own machine is not a provider's host")]
    name = text.rsplit(":", 1)[0] if text.count(":") == 1 else text
    name = name.strip("[]")
    if name in ("localhost", "localhost.localdomain") or name.endswith(".localhost"):
        return [ConfigIssue(where, f"'{host}' is the API's own machine, not a provider's host")]
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return []
    if address.is_loopback or address.is_link_local or address.is_unspecified or address.is_multicast:
        return [
            ConfigIssue(
                where, f"'{host}' is the API's own machine or its cloud metadata service, not a provider's host"
            )
        ]
    return []
