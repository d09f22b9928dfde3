"""Parse a user's YAML or JSON document with declared limits, before anything validates it.

``load_document(text)`` is the one way user documents (manifests, policy files, queue and
inventory files) are read. YAML aliases let a 20 KB document name the same subtree a
million times ("billion laughs"); a loader that expands them builds megabytes from
kilobytes, and deep nesting makes the parser recurse past Python's limit. So the node
graph is composed first and measured — its size *as expanded* and its depth — and only a
document within the limits is constructed. Past a limit the error names it.

    MAX_DOCUMENT_BYTES   the text itself (the API's body limit is the same figure)
    MAX_NODES            scalars + collections after alias expansion
    MAX_EXPANDED_CHARS   the characters of every scalar after alias expansion: no more than
                         a document without aliases could hold
    MAX_DEPTH            nesting of mappings and sequences
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from orrery.errors import ManifestError

MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_NODES = 100_000
MAX_EXPANDED_CHARS = MAX_DOCUMENT_BYTES
MAX_DEPTH = 64


class _TooBig(yaml.YAMLError):
    """Past a limit. A YAMLError, so code that reports YAML errors reports this one too."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"document {reason}")
        self.reason = reason


def measure(root: Node) -> None:
    """Count ``root``'s nodes as expanded and its depth; raise _TooBig past a limit.

    An aliased subtree is measured once (memoised by identity) and counted each time it is
    used, so the walk stays linear in the composed graph while the count is the expanded
    one. A node that contains itself (``&a [*a]``) is refused: it expands without end."""
    sizes: dict[int, tuple[int, int]] = {}  # node -> (nodes, characters) as expanded
    active: set[int] = set()
    # Iterative post-order walk: deep documents must not recurse here either.
    stack: list[tuple[Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            parts = [sizes[id(c)] for c in _children(node)]
            total = (1 + sum(p[0] for p in parts), sum(p[1] for p in parts))
            _check(total)
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in active:
            raise _TooBig("a YAML alias refers to a node that contains it")
        if depth > MAX_DEPTH:
            raise _TooBig(f"nested deeper than {MAX_DEPTH} levels")
        children = _children(node)
        if not children:
            sizes[key] = (1, len(node.value) if isinstance(node, ScalarNode) else 0)
            continue
        active.add(key)
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children)


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's composer recurses once per level: stop it at MAX_DEPTH, long before
    Python's recursion limit (and quickly: no thousand frames to unwind)."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooBig(f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check(size: tuple[int, int]) -> None:
    if size[0] > MAX_NODES:
        raise _TooBig(f"expands to more than {MAX_NODES} nodes (YAML aliases?)")
    if size[1] > MAX_EXPANDED_CHARS:
        raise _TooBig(f"expands to more than {MAX_EXPANDED_CHARS} characters (YAML aliases?)")


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def load_document(text: str, *, source: str = "manifest") -> Any:
    """Parse YAML (a superset of JSON) within the limits above; errors name the line or
    the limit, as a ManifestError (a 422 at the API, one line in the CLI)."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise ManifestError(
            [("", f"document larger than {MAX_DOCUMENT_BYTES} bytes")], source=source
        )
    if text[:1] in "{[" or text.lstrip()[:1] in "{[":
        ok, data = _load_json(text)
        if ok:
            measure_data(data, source=source)
            return data
    loader: BoundedLoader | None = None
    try:
        loader = BoundedLoader(text)  # reads the first characters: may raise already
        node = loader.get_single_node()
        if node is None:
            return None
        measure(node)
        return loader.construct_document(node)
    except _TooBig as exc:
        raise ManifestError([("", f"document {exc.reason}")], source=source) from None
    except RecursionError:
        raise ManifestError(
            [("", f"document nested deeper than {MAX_DEPTH} levels")], source=source
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ManifestError(
            [("", f"not valid YAML at {where}: {exc.problem}")], source=source
        ) from None
    except yaml.YAMLError as exc:
        raise ManifestError([("", f"not valid YAML: {exc}")], source=source) from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer of 5,000 digits
        raise ManifestError([("", f"not valid YAML: {exc}")], source=source) from None
    finally:
        if loader is not None:
            loader.dispose()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _load_json(text: str) -> tuple[bool, Any]:
    """JSON text (what the CLI and most clients send) read by the C decoder, some fifty
    times faster than composing YAML nodes. Anything it refuses (not JSON after all, NaN,
    nesting past the interpreter's limit) goes the YAML way, whose messages name the line."""
    try:
        return True, json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return False, None


def measure_data(data: Any, *, source: str = "manifest") -> None:
    """The limits above, on data already parsed from JSON (no aliases: as written)."""
    nodes = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if depth > MAX_DEPTH:
            raise ManifestError(
                [("", f"document nested deeper than {MAX_DEPTH} levels")], source=source
            )
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
            nodes += len(item)
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        if nodes > MAX_NODES:
            raise ManifestError(
                [("", f"document expands to more than {MAX_NODES} nodes")], source=source
            )


def json_items(text: str) -> list[Any] | None:
    """The documents of a JSON body as ``load_documents`` reads them, *not yet held to the
    limits* (None: not JSON, or too long). For a caller that validates them against a
    model every valid instance of which is within the limits (a job manifest: a few
    thousand nodes, a few levels deep): a measure walk costs more than the validation.
    Anything that fails to validate must go through ``load_documents``, which measures."""
    if len(text) > MAX_DOCUMENT_BYTES or text.lstrip()[:1] not in ("[", "{"):
        return None
    ok, data = _load_json(text)
    if not ok:
        return None
    if isinstance(data, dict) and set(data) == {"items"}:
        data = data["items"]
    return data if isinstance(data, list) else [data]


def load_documents(text: str, *, source: str = "manifests") -> list[Any]:
    """Several documents: a JSON array (or ``{"items": [...]}``), or a YAML stream of
    documents separated by ``---``. Each is held to the limits above on its own; empty
    documents (a trailing ``---``) are skipped."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise ManifestError(
            [("", f"document larger than {MAX_DOCUMENT_BYTES} bytes")], source=source
        )
    items = json_items(text)
    if items is not None:
        for item in items:
            measure_data(item, source=source)
        return items
    loader: BoundedLoader | None = None
    out: list[Any] = []
    try:
        loader = BoundedLoader(text)
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            measure(node)
            doc = loader.construct_document(node)
            if doc is not None:
                out.append(doc)
        return out
    except _TooBig as exc:
        raise ManifestError([("", f"document {len(out)}: {exc.reason}")], source=source) from None
    except RecursionError:
        raise ManifestError(
            [("", f"document {len(out)} nested deeper than {MAX_DEPTH} levels")], source=source
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ManifestError(
            [("", f"not valid YAML at {where}: {exc.problem}")], source=source
        ) from None
    except (yaml.YAMLError, ValueError, OverflowError) as exc:
        raise ManifestError([("", f"not valid YAML: {exc}")], source=source) from None
    finally:
        if loader is not None:
            loader.dispose()
