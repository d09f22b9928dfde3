"""Globs and selectors, compiled once at load so evaluation is dict lookups and regexes.

A glob is fnmatch-style (``*``, ``?``, ``[abc]``), case-sensitive, matched against the whole
value. A plain value without glob characters is compared for equality: most policies
name values outright, and equality is much cheaper than a regex.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class Glob:
    text: str
    regex: re.Pattern[str] | None  # None: a plain value, compared for equality

    @classmethod
    def of(cls, text: str) -> Glob:
        if _GLOB_CHARS.isdisjoint(text):
            return cls(text, None)
        return cls(text, re.compile(fnmatch.translate(text)))

    def matches(self, value: str) -> bool:
        if self.regex is None:
            return value == self.text
        return self.regex.match(value) is not None


@dataclass(frozen=True, slots=True)
class AnyOf:
    """One or more globs; a value matches when any does."""

    globs: tuple[Glob, ...]

    @classmethod
    def of(cls, spec: str | list[str]) -> AnyOf:
        texts = [spec] if isinstance(spec, str) else spec
        return cls(tuple(Glob.of(t) for t in texts))

    def matches(self, value: str | None) -> bool:
        if value is None:
            return False
        return any(g.matches(value) for g in self.globs)

    def text(self) -> str:
        return "|".join(g.text for g in self.globs)


@dataclass(frozen=True, slots=True)
class JobMatcher:
    """Which jobs a policy applies to: every given field must match."""

    labels: tuple[tuple[str, AnyOf], ...]
    queue: AnyOf | None
    team: AnyOf | None

    @property
    def label_keys(self) -> frozenset[str]:
        return frozenset(k for k, _ in self.labels)

    def matches(self, labels: Mapping[str, str], queue: str, team: str | None) -> bool:
        if self.queue is not None and not self.queue.matches(queue):
            return False
        if self.team is not None and not self.team.matches(team):
            return False
        return all(want.matches(labels.get(key)) for key, want in self.labels)


@dataclass(frozen=True, slots=True)
class ClusterMatcher:
    """A cluster matches when named in ``names`` or when it carries every label in ``labels``."""

    labels: tuple[tuple[str, AnyOf], ...]
    names: AnyOf | None

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        if self.names is not None and self.names.matches(name):
            return True
        if not self.labels:
            return False
        return all(want.matches(labels.get(key)) for key, want in self.labels)

    def text(self) -> str:
        """How a user would write it: ``region=eu-*`` or ``cluster in eu-west-1|eu-north-1``."""
        parts = [f"{k}={v.text()}" for k, v in self.labels]
        label_part = ", ".join(parts)
        if self.names is None:
            return label_part
        name_part = f"cluster {self.names.text()}"
        return f"{name_part} or {label_part}" if label_part else name_part

    def why_not(self, name: str, labels: Mapping[str, str]) -> str:
        """What the cluster has instead, for a reason line."""
        have = []
        for key, _ in self.labels:
            value = labels.get(key)
            have.append(f"{key}={value}" if value is not None else f"no {key} label")
        return ", ".join(have) if have else f"cluster {name}"


def compile_labels(spec: Mapping[str, str | list[str]]) -> tuple[tuple[str, AnyOf], ...]:
    return tuple((k, AnyOf.of(v)) for k, v in sorted(spec.items()))
