"""Narrative's data streams and the attributes they select (issue 14), as config models.

``attributes:`` declares normalised fields independent of any provider's schema: an integer ``id``
(Narrative's attribute id), a ``name`` and a JSON ``schema``. A dataset fills an attribute from its
own columns with ``attributes: {<attribute id>: <expression>}`` (an object attribute:
``{<attribute id>: {<property>: <expression>, ...}}``), in the expression language of stream mappings.

``data_streams:`` are Narrative's data-stream objects field for field (``name``, ``slug``,
``content``, ``tags``, ``category``, ``offers``, ``data_rules``, ``auth_rules``) plus our ``id`` and
``datalake_id``. ``data_rules`` is kept as written (the API returns it so) and checked by the rules
engine's parser; ``column_sets[].dataset_id`` and ``auth_rules.company_constraint.company_ids`` name
our dataset and provider ids (Narrative's integers are accepted and read as those ids' text).
"""

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from .data_rules import RulesError, parse_data_rules
from .errors import ConfigIssue
from .models import Block, Entry, EnvStr, Id, _refuse

DATA_STREAMS_NAMESPACE = "_data_streams"
"""The provider namespace a data stream's commits and state live under in its datalake
(``lakehouse/_data_streams/<id>/``): never a provider's id (those start with a letter or digit)."""
RECORD_ID_COLUMN = "_record_id"
"""A data stream record's identity: ``<provider_id>/<dataset_id>/<primary key>`` (stable: delivery ids derive from it)."""
PROVIDER_COLUMN = "_provider_id"
DATASET_COLUMN = "_dataset_id"


def _as_id_text(value: Any) -> Any:
    """Narrative's integer ids (``91``, ``160``) as our string ids (``"91"``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


IdRef = Annotated[Id, BeforeValidator(_as_id_text)]


class AttributeDefinition(Block):
    """One normalised attribute: ``{id, name, schema}`` (``schema``: JSON Schema of its value)."""

    id: Annotated[int, Field(ge=0)]
    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None

    model_config = Block.model_config | {"populate_by_name": True}

    @property
    def properties(self) -> dict[str, Any] | None:
        """The properties of an object attribute (each a column of its own); None for a scalar attribute."""
        if self.schema_.get("type") == "object" or "properties" in self.schema_:
            props = self.schema_.get("properties")
            return props if isinstance(props, dict) else {}
        return None

    def columns(self) -> list[str]:
        """The columns this attribute fills in a data stream's rows: its properties, or its name."""
        props = self.properties
        return list(props) if props is not None else [self.name]

    def column_json_type(self, column: str) -> str | None:
        schema = self.properties.get(column, {}) if self.properties is not None else self.schema_
        declared = schema.get("type") if isinstance(schema, dict) else None
        if isinstance(declared, list):
            declared = next((t for t in declared if t != "null"), None)
        return declared if isinstance(declared, str) else None


class License(Block):
    name: str


class Licensing(Block):
    """``period`` (ISO-8601 duration) is how long a buyer may use what was delivered; stored and returned."""

    period: str | None = None
    license: License | None = None


class Pricing(Block):
    """``micro_cents_usd``: USD per record = value / 10^8 (500000 -> $0.005 per record, $5 CPM)."""

    type: Literal["per_record", "max_price_per_record"]
    micro_cents_usd: Annotated[int, Field(ge=0)]

    @property
    def usd_per_record(self) -> float:
        return self.micro_cents_usd / 10**8


class Offer(Block):
    """How the stream is sold: a channel, a licence and a price per record."""

    id: str | None = None
    channel: Literal["data_streams_market", "data_shop"]
    licensing: Licensing | None = None
    pricing: Pricing
    shops: list[str] | None = None


class CompanyConstraint(Block):
    """Whose data may enter: ``inclusion`` (only these providers), ``exclusion`` (all but these), ``all``."""

    type: Literal["inclusion", "exclusion", "all"]
    company_ids: list[IdRef] = []

    def allows(self, provider_id: str) -> bool:
        if self.type == "all":
            return True
        listed = provider_id in self.company_ids
        return listed if self.type == "inclusion" else not listed


class AuthRules(Block):
    company_constraint: CompanyConstraint | None = None

    def allows(self, provider_id: str) -> bool:
        return self.company_constraint is None or self.company_constraint.allows(provider_id)


class DataStream(Entry):
    """A curated dataset built from one or more providers' datasets (Narrative's data stream)."""

    id: Id
    name: Annotated[EnvStr, Field(min_length=1)]
    slug: Annotated[str, Field(min_length=1)]
    content: dict[str, Any] | None = None
    tags: list[Annotated[str, Field(min_length=1)]] | None = None
    category: Annotated[str, Field(min_length=1)] | None = None
    offers: list[Offer] | None = None
    data_rules: dict[str, Any] | None = None
    auth_rules: AuthRules | None = None
    datalake_id: Id | None = Field(
        default=None,
        description="The datalake its commits live in (under lakehouse/_data_streams/<id>/); default: the "
        "datalake of the providers of the datasets it reads, when they share one.",
    )
    description: str | None = None
    company_id: Any = None  # Narrative's owner, accepted from a body as GET returned it; never used
    created_by: Any = None
    created_at: dt.datetime | str | None = None
    updated_at: dt.datetime | str | None = None
    datasets: Any = None

    @model_validator(mode="after")
    def _rules(self) -> "DataStream":
        _refuse(self, data_rules_problems(self.data_rules))
        return self

    @property
    def rules(self) -> Any:
        """``data_rules`` parsed (a :class:`~prequel_dagster.rules.DataRules`); checked when the entry was made."""
        return parse_data_rules(self.data_rules or {})

    def column_set_datasets(self) -> list[str]:
        sets = (self.data_rules or {}).get("column_sets") or []
        return list(dict.fromkeys(str(s.get("dataset_id")) for s in sets if isinstance(s, dict)))

    def attribute_ids(self) -> list[int]:
        """Attributes the rules select or deduplicate/count by."""
        rules = self.data_rules or {}
        found: list[Any] = [a.get("attribute_id") for a in rules.get("attributes") or [] if isinstance(a, dict)]
        for key in ("deduplication", "frequency_filter"):
            block = rules.get(key) or {}
            found += [r.get("attribute_id") for r in block.get("attribute_references") or [] if isinstance(r, dict)]
        out: list[int] = []
        for value in found:
            try:
                number = int(value)
            except (TypeError, ValueError):
                continue
            if number not in out:
                out.append(number)
        return out

    def allows(self, provider_id: str) -> bool:
        return self.auth_rules is None or self.auth_rules.allows(provider_id)


def data_rules_problems(raw: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """``data_rules`` problems as (location, message) pairs, each at its path inside ``data_rules``."""
    if raw is None:
        return []
    try:
        parse_data_rules(raw, where="data_rules")
    except RulesError as exc:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for line in str(exc).splitlines()[1:]:
            path, _, message = line.strip().partition(": ")
            problems.append(((path,), message))
        return problems
    return []


def data_stream_issues(entries: dict[str, list[Any]], ids: dict[str, dict[str, Any]]) -> list[ConfigIssue]:
    """Cross-references of attributes, datasets' attribute fills and data streams (see config.loading)."""
    from ..language.expressions import ExpressionError, parse_expression

    issues: list[ConfigIssue] = []
    attributes: dict[int, AttributeDefinition] = {}
    for a in entries.get("attributes", []):
        if a.model is not None:
            attributes.setdefault(a.model.id, a.model)
            declared = a.model.schema_.get("type")
            if declared is not None and not isinstance(declared, (str, list)):
                issues.append(ConfigIssue(f"{a.path}.schema.type", "must be a JSON type name such as string"))

    providers_of: dict[str, str | None] = {}  # dataset id -> its provider id (when known)
    for d in entries.get("datasets", []):
        source = ids.get("sources", {}).get(d.fields.get("source_id")) if d.fields.get("source_id") else None
        providers_of[str(d.id)] = source.fields.get("provider_id") if source is not None else None
        if d.model is None:
            continue
        for attribute_id, fill in (d.model.attributes or {}).items():
            where = f"{d.path}.attributes.{attribute_id}"
            attribute = attributes.get(attribute_id)
            if attribute is None:
                issues.append(ConfigIssue(where, f"no attribute with id {attribute_id}; declare it under attributes:"))
                continue
            props = attribute.properties
            if props is None and not isinstance(fill, str):
                issues.append(
                    ConfigIssue(
                        where, f"attribute {attribute_id} ('{attribute.name}') is a single value: give one expression"
                    )
                )
                continue
            if props is not None and not isinstance(fill, dict):
                issues.append(
                    ConfigIssue(
                        where,
                        f"attribute {attribute_id} ('{attribute.name}') is an object: give an expression per property "
                        f"({', '.join(props) or 'none declared'}), such as {{{next(iter(props), 'field')}: column}}",
                    )
                )
                continue
            fills = {"": fill} if isinstance(fill, str) else fill
            for prop, expr in fills.items():
                at = f"{where}.{prop}" if prop else where
                if prop and prop not in (props or {}):
                    issues.append(
                        ConfigIssue(
                            at,
                            f"attribute {attribute_id} has no property '{prop}' (its properties: {', '.join(props or {})})",
                        )
                    )
                try:
                    parse_expression(expr)
                except ExpressionError as exc:
                    issues.append(ConfigIssue(at, str(exc)))

    dataset_ids = ids.get("datasets", {})
    provider_ids = ids.get("providers", {})
    for s in entries.get("data_streams", []):
        if s.id is not None and s.id in dataset_ids:
            issues.append(
                ConfigIssue(
                    f"{s.path}.id",
                    f"'{s.id}' is also a dataset's id; a stream's dataset_id names either, so choose another id",
                )
            )
        if s.model is None:
            continue
        stream: DataStream = s.model
        lake = stream.datalake_id
        if lake is not None and lake not in ids.get("datalakes", {}):
            issues.append(ConfigIssue(f"{s.path}.datalake_id", f"no datalake with id '{lake}'"))
        for i, column_set in enumerate((stream.data_rules or {}).get("column_sets") or []):
            ds = str(column_set.get("dataset_id"))
            if ds not in dataset_ids:
                issues.append(
                    ConfigIssue(
                        f"{s.path}.data_rules.column_sets[{i}].dataset_id",
                        f"no dataset with id '{ds}'; column_sets name our dataset ids (Narrative's numbers are read as text)",
                    )
                )
        for attribute_id in stream.attribute_ids():
            if attribute_id not in attributes:
                issues.append(
                    ConfigIssue(f"{s.path}.data_rules", f"attribute {attribute_id} is not declared under attributes:")
                )
        constraint = stream.auth_rules.company_constraint if stream.auth_rules else None
        for j, provider in enumerate(constraint.company_ids if constraint else []):
            if provider not in provider_ids:
                issues.append(
                    ConfigIssue(
                        f"{s.path}.auth_rules.company_constraint.company_ids[{j}]",
                        f"no provider with id '{provider}' (companies are providers)",
                    )
                )
        readers = source_datasets(stream, entries)
        if not readers:
            issues.append(
                ConfigIssue(
                    f"{s.path}.data_rules",
                    "reads no dataset: name datasets in column_sets, or select attributes that datasets fill",
                )
            )
        if lake is None and readers:
            lakes = set()
            for ds in readers:
                owner = provider_ids.get(providers_of.get(ds) or "")
                lakes.add(owner.fields.get("datalake_id") if owner is not None else None)
            if len(lakes) > 1:
                issues.append(
                    ConfigIssue(
                        f"{s.path}.datalake_id",
                        "its datasets live in different datalakes; name the one its commits go to",
                    )
                )
    return issues


def source_datasets(stream: DataStream, entries: dict[str, list[Any]]) -> list[str]:
    """The datasets a data stream reads (before its company constraint): those its column sets name,
    then those that fill an attribute it uses, in config order."""
    return _readers(stream, [d.model for d in entries.get("datasets", []) if d.model is not None])


def _readers(stream: DataStream, datasets: list[Any]) -> list[str]:
    wanted = set(stream.attribute_ids())
    out = list(stream.column_set_datasets())
    for d in datasets:
        if wanted & set(d.attributes or {}) and d.id not in out:
            out.append(d.id)
    return out


def data_stream_sources(config: Any, stream: DataStream) -> list[tuple[str, str]]:
    """``(provider_id, dataset_id)`` of every dataset the data stream reads whose provider its company
    constraint admits (a provider outside it never contributes a row)."""
    out = []
    for dataset_id in _readers(stream, config.datasets):
        try:
            provider = config.chain(dataset_id).provider
        except KeyError:
            continue
        if stream.allows(provider.id):
            out.append((provider.id, dataset_id))
    return out


def data_stream_datalake_id(config: Any, stream: DataStream) -> str:
    """Where the data stream's commits live: ``datalake_id``, else its datasets' providers' datalake."""
    if stream.datalake_id is not None:
        return stream.datalake_id
    for dataset_id in _readers(stream, config.datasets):
        try:
            return str(config.chain(dataset_id).provider.datalake_id)
        except KeyError:
            continue
    if config.datalakes:
        return str(config.datalakes[0].id)
    raise KeyError(f"data stream '{stream.id}' has no datalake")


def data_stream_dataset(stream: DataStream) -> Any:
    """The dataset a data stream's commits make, as a stream's load reads it: keyed by ``_record_id``."""
    from .models import Dataset, Dimension

    return Dataset.model_construct(
        id=stream.id,
        name=stream.name,
        source_id=DATA_STREAMS_NAMESPACE,
        method="table",
        type="dimension",
        dimension=Dimension.model_construct(
            primary_key_column=RECORD_ID_COLUMN, last_modified_column=None, is_deleted_column=None
        ),
        description=stream.description,
        frequency_minutes=60,
        attributes={},
    )


def data_stream_chain(config: Any, stream: DataStream, dataset: Any) -> Any:
    """The chain of a data stream's dataset: a source and provider of the ``_data_streams`` namespace
    (the company's own), and its datalake."""
    from .models import DatasetChain, Provider, Source

    lake = config.datalake(data_stream_datalake_id(config, stream))
    provider = Provider.model_construct(
        id=DATA_STREAMS_NAMESPACE, name="Data streams", datalake_id=lake.id, products=["all"], owners=[]
    )
    source = Source.model_construct(
        id=DATA_STREAMS_NAMESPACE, name="data streams", vendor="data_stream", provider_id=DATA_STREAMS_NAMESPACE
    )
    return DatasetChain(dataset, source, provider, lake)
