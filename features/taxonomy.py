"""The anomaly taxonomy: categories, root causes and measures, read from a data file."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

DEFAULT_TAXONOMY = Path(__file__).with_name("taxonomy.toml")


@dataclass(frozen=True)
class Cause:
    code: str
    name: str
    category: str
    description: str = ""
    measures: tuple[str, ...] = ()


@dataclass(frozen=True)
class Category:
    code: str
    name: str
    measures: tuple[str, ...] = ()
    causes: tuple[Cause, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Taxonomy:
    categories: tuple[Category, ...]

    @property
    def category_codes(self) -> list[str]:
        return [c.code for c in self.categories]

    def category(self, code: str) -> Category | None:
        return next((c for c in self.categories if c.code == code), None)

    def cause(self, code: str) -> Cause | None:
        for category in self.categories:
            for cause in category.causes:
                if cause.code == code:
                    return cause
        return None

    def causes(self) -> list[Cause]:
        return [cause for c in self.categories for cause in c.causes]

    def measures_for(self, cause_code: str, category_code: str | None = None) -> list[str]:
        """Return the measures of a root cause, else those of its category."""
        cause = self.cause(cause_code)
        if cause is not None and cause.measures:
            return list(cause.measures)
        category = self.category(category_code or "")
        return list(category.measures) if category else []

    def to_dict(self) -> dict:
        return {
            "categories": [
                {
                    "code": c.code,
                    "name": c.name,
                    "measures": list(c.measures),
                    "causes": [
                        {
                            "code": k.code,
                            "name": k.name,
                            "description": k.description,
                            "measures": list(k.measures),
                        }
                        for k in c.causes
                    ],
                }
                for c in self.categories
            ]
        }


def parse_taxonomy(data: dict) -> Taxonomy:
    categories = []
    for entry in data["categories"]:
        causes = tuple(
            Cause(
                code=k["code"],
                name=k["name"],
                category=entry["code"],
                description=k.get("description", ""),
                measures=tuple(k.get("measures", ())),
            )
            for k in entry.get("causes", ())
        )
        categories.append(
            Category(
                code=entry["code"],
                name=entry["name"],
                measures=tuple(entry.get("measures", ())),
                causes=causes,
            )
        )
    return Taxonomy(tuple(categories))


@lru_cache(maxsize=8)
def load_taxonomy(path: str | Path = DEFAULT_TAXONOMY) -> Taxonomy:
    """Read a taxonomy TOML file (the shipped one by default)."""
    with open(path, "rb") as fh:
        return parse_taxonomy(tomllib.load(fh))


__all__ = ["Category", "Cause", "Taxonomy", "load_taxonomy", "parse_taxonomy"]
