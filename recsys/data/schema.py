"""The data schema: one YAML file that says where a data set's files are and what their
columns mean, which every layer follows (training, the index catalog, the Feast profile view,
the API's filters).

    name: shop
    interactions:
      files: ["{data_dir}/shop/events-*.parquet"]   # Parquet or CSV; globs allowed
      user: visitor
      item: sku
      time: ts
      time_unit: ms            # s, ms or iso8601
      value: quantity          # optional: a number per event (a rating, a quantity)
      event_type: action       # optional
    items:
      file: "{data_dir}/shop/items.parquet"
      id: sku
      features:
        category: {kind: tags}
        brand: {kind: categorical}
        price: {kind: numeric, buckets: 16}
        launched: {kind: date}
        name: {kind: text}
    users: null                # optional: many products have no profile
    filter: category           # the item tags feature the API's filters name

Feature kinds (``KINDS``): ``categorical`` (one string), ``tags`` (a list of strings, or one
string split at ``separator``), ``numeric`` (bucketised at explicit ``boundaries`` or the
data's quantiles), ``text`` (lower-case word tokens), ``year`` (a number of years) and
``date`` (epoch seconds, milliseconds or ISO-8601, as a fractional year); the last two are
bucketised like ``numeric``. ``{data_dir}`` in a path is ``paths.data_dir``; other relative
paths resolve against the schema file's folder.

MovieLens-100K ships as ``recsys/data/ml-100k.yaml``, the default of ``data.schema``.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recsys.config import Config, problems, read_yaml
from recsys.errors import ConfigError

KINDS = ("categorical", "tags", "numeric", "text", "year", "date")
Kind = Literal["categorical", "tags", "numeric", "text", "year", "date"]
BUCKETED = ("numeric", "year", "date")
"""Kinds read as a number and bucketised."""
MULTI = ("tags", "text")
"""Kinds that give several ids per value."""
RESERVED = ("user", "item", "hour", "weekday", "history")
"""Tower input names a feature may not take."""
BUILTIN = Path(__file__).with_name("ml-100k.yaml")
"""MovieLens-100K's schema, shipped with the package: the default of ``data.schema``."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Feature(_Strict):
    """One declared feature of an item or a user."""

    kind: Kind
    column: str | None = None
    """The file's column; default: the feature's name."""
    prefix: int | None = Field(None, ge=1)
    """``categorical``: keep only the leading characters (a zip code's region)."""
    separator: str | None = None
    """``tags`` stored as one string: the character between tags (``"|"``)."""
    max_values: int = Field(16, ge=1, le=256)
    """``tags``: the most tags of one item the tower reads (the rarest are dropped)."""
    max_tokens: int = Field(8, ge=1, le=64)
    """``text``: the most word tokens of one value the tower reads (the first ones)."""
    min_count: int = Field(1, ge=1)
    """``categorical``, ``tags``, ``text``: values (words) seen in fewer rows share the
    unknown bucket."""
    buckets: int = Field(10, ge=2, le=1000)
    """``numeric``, ``year``, ``date``: quantile buckets fitted on the data."""
    boundaries: tuple[float, ...] | None = None
    """``numeric``, ``year``, ``date``: explicit bucket boundaries instead (ascending)."""
    time_unit: Literal["s", "ms", "iso8601"] | None = None
    """``date``: how a stored value reads; default: by the column's type (Parquet dates and
    timestamps as they are, strings as ISO-8601, numbers as epoch seconds)."""

    @model_validator(mode="after")
    def _options_fit_the_kind(self) -> Feature:
        allowed = {
            "prefix": ("categorical",),
            "separator": ("tags",),
            "max_values": ("tags",),
            "max_tokens": ("text",),
            "min_count": ("categorical", "tags", "text"),
            "buckets": BUCKETED,
            "boundaries": BUCKETED,
            "time_unit": ("date",),
        }
        for option in self.model_fields_set:
            kinds = allowed.get(option)
            if kinds is not None and self.kind not in kinds:
                raise ValueError(
                    f"option {option!r} applies to kind {' or '.join(kinds)}, not {self.kind}"
                )
        b = self.boundaries
        if b is not None and (not b or any(x >= y for x, y in itertools.pairwise(b))):
            raise ValueError("boundaries must be a non-empty, strictly ascending list")
        return self

    def source(self, name: str) -> str:
        return self.column or name


class Table(_Strict):
    """A file of items or users: one row per id, one column per feature."""

    file: str
    id: str
    features: dict[str, Feature] = Field(default_factory=dict)
    separator: str = ","
    """CSV only: the field separator (``"\\t"`` for TSV)."""

    @model_validator(mode="after")
    def _names(self) -> Table:
        for name in self.features:
            if not name.isidentifier() or name in RESERVED:
                raise ValueError(
                    f"feature name {name!r} must be an identifier and not one of {RESERVED}"
                )
        return self


class Interactions(_Strict):
    """The events: who interacted with what, when."""

    files: list[str] = Field(min_length=1)
    user: str
    item: str
    time: str
    time_unit: Literal["s", "ms", "iso8601"] = "s"
    value: str | None = None
    """A number per event (a rating, a quantity), kept as the event's value."""
    event_type: str | None = None
    """The kind of event (view, cart, purchase), kept beside it."""
    separator: str = ","


class DataSchema(_Strict):
    """A data set's declaration (the module docstring shows one)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    interactions: Interactions
    items: Table
    users: Table | None = None
    filter: str | None = None
    """The item ``tags`` feature the API's ``include_genres``/``exclude_genres`` name."""
    path: Path = Path(".")
    """The schema file (set by ``load_schema``; relative paths resolve against its folder)."""
    data_dir: Path = Path(".")
    """``paths.data_dir``: what ``{data_dir}`` in a path stands for."""

    @model_validator(mode="after")
    def _filter_is_a_tags_feature(self) -> DataSchema:
        if self.filter is not None:
            feature = self.items.features.get(self.filter)
            if feature is None or feature.kind != "tags":
                tags = [n for n, f in self.items.features.items() if f.kind == "tags"]
                raise ValueError(
                    f"filter {self.filter!r} must name an item feature of kind tags "
                    f"(declared: {tags or 'none'})"
                )
        return self

    def resolve(self, raw: str) -> Path:
        """A declared path: ``{data_dir}`` expanded, relative to the schema's folder."""
        path = Path(raw.replace("{data_dir}", str(self.data_dir)))
        return path if path.is_absolute() else (self.path.parent / path).absolute()

    @property
    def user_features(self) -> dict[str, Feature]:
        return {} if self.users is None else dict(self.users.features)

    @property
    def item_features(self) -> dict[str, Feature]:
        return dict(self.items.features)


def load_schema(path: Path | None, data_dir: Path) -> DataSchema:
    """Reads and validates a schema file (``None``: MovieLens-100K's).

    Raises:
        ConfigError: the file cannot be read, is not YAML, or a key is unknown, missing or
            of the wrong kind; the message names the file and the key.
    """
    path = BUILTIN if path is None else Path(path)
    raw = read_yaml(path, "data schema")
    if not isinstance(raw, dict):
        raise ConfigError(f"data schema {path} must hold a mapping (name, interactions, items)")
    for key in ("path", "data_dir"):
        if key in raw:
            raise ConfigError(f"data schema {path}: {key!r} is not a schema key")
    data: dict[str, Any] = {**raw, "path": path.absolute(), "data_dir": Path(data_dir).absolute()}
    try:
        return DataSchema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"data schema {path}: {problems(exc)}") from exc


def configured_schema(config: Config) -> DataSchema:
    """The schema ``data.schema`` names (MovieLens-100K's by default)."""
    return load_schema(config.data.schema_file, config.paths.data_dir)
