"""A destination's request templates, parsed from the config's text and rendered per batch or record.

A header's configured text is parsed, never its secret's value: only the literal pieces around
template actions are resolved from the environment. Values are encoded for their place (see
``language.templates``); records whose values a header could not carry are refused before batching.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..config.models import Destination
from ..config.secrets import Secret
from ..language.templates import HEADER_UNSAFE_PATTERN, Template, parse_template
from ..transform.schema import Check
from .wire import Batch


@dataclass
class RequestTemplates:
    uri: Template
    headers: dict[str, Template]
    body: Template | None

    @classmethod
    def of(cls, destination: Destination, *, reveal: bool) -> "RequestTemplates":
        """Parsed from the configured text: a secret's value is never read as a template (only
        the literal pieces around actions are resolved, when ``reveal``)."""
        per_record = destination.type == "webhook_record"
        t = destination.webhook.request_template
        headers = {}
        for name, secret in t.headers.items():
            tpl = parse_template(secret.template, allow_record=per_record, allow_records=not per_record)
            headers[name] = (
                tpl.with_literals(lambda text, s=secret: Secret(text, literal=s.literal).reveal()) if reveal else tpl
            )
        return cls(
            parse_template(t.uri, allow_record=per_record, allow_records=not per_record, place="uri"),
            headers,
            parse_template(t.body, allow_record=True, allow_records=False, place="body") if t.body else None,
        )

    @property
    def need_records(self) -> bool:
        parts = [self.uri, *self.headers.values(), *([self.body] if self.body else [])]
        return any(p.uses_record or p.uses_records for p in parts)

    def header_checks(self, mapped: pa.Table) -> list[Check]:
        """Records whose values a header template would carry but cannot (CR/LF, non-ASCII): refused alone."""
        checks: list[Check] = []
        for header, tpl in self.headers.items():
            for name in sorted(tpl.fields & set(mapped.column_names)):
                col = mapped.column(name).combine_chunks()
                if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                    bad = pc.match_substring_regex(col, HEADER_UNSAFE_PATTERN)
                    checks.append(
                        (
                            bad,
                            f"'{name}' holds a character header '{header}' cannot carry "
                            "(only printable ASCII is sent in headers)",
                        )
                    )
        return checks

    def render(
        self,
        batch: Batch,
        *,
        per_record: bool,
        provider_id: str,
        stream_id: str,
        load_id: str,
        batch_id: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> tuple[str, dict[str, str], bytes]:
        """The uri, headers and body of one request; raises ``UnsafeValue`` for a value that cannot go there.
        ``metadata`` goes in a batch's envelope (a single record's body has no envelope to carry it)."""
        if per_record:
            _, record, is_deleted = batch.records()[0]
            vars_: dict[str, Any] = {"provider_id": provider_id, "record": record, "is_deleted": is_deleted}
            body = self.body.render(**vars_).encode() if self.body else batch.joined(is_deleted)
        else:
            records = [r for _, r, _ in batch.records()] if self.need_records else []
            vars_ = {"provider_id": provider_id, "records": records}
            body = batch.body(
                provider_id=provider_id, stream_id=stream_id, load_id=load_id, batch_id=batch_id, metadata=metadata
            )
        uri = self.uri.render(**vars_)
        headers = {name: tpl.render(**vars_) for name, tpl in self.headers.items()}
        return uri, headers, body
