"""Line numbers of TOML keys in a manifest, so a load error names ``file:line`` and the key."""
from __future__ import annotations

import re


def key_path_of(msg: str) -> tuple:
    """('wsclean', 'mgain') from 'wsclean.mgain: ...' (best effort, for line lookup)."""
    head = msg.split(":", 1)[0].strip()
    head = head.split("/", 1)[0]
    head = re.sub(r"\[\d+\]", "", head)
    if not head or " " in head:
        return ()
    # "templates: unknown template 'brigth'": the unknown name is the next key of the path
    named = re.match(r"[^:]*:\s*unknown \w+ '([^']+)'", msg)
    return (*(p for p in head.split(".") if p), *((named.group(1),) if named else ()))


class KeyLocator:
    """Maps TOML key paths (``("datasets", 2, "imsize")``) to 1-based line numbers.

    A line scanner, not a parser: it follows ``[table]`` / ``[[array]]`` headers, dotted
    keys and one level of inline tables, which is enough to point at the offending line.
    """

    _ARRAY_HDR = re.compile(r"^\s*\[\[\s*([^\]]+?)\s*\]\]")
    _TABLE_HDR = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]")
    _KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_\-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|"[^"]*"|'[^']*'))*)\s*=(.*)$""")
    _INLINE_KEY = re.compile(r"""[{,]\s*([A-Za-z0-9_\-]+|"[^"]*")\s*=""")

    def __init__(self, text: str):
        self.lines: dict[tuple, int] = {}
        counters: dict[tuple, int] = {}
        current: tuple = ()
        for n, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0] if raw.lstrip().startswith(("[", "#")) else raw
            m = self._ARRAY_HDR.match(line)
            if m:
                raw_parts = self._split(m.group(1))
                parts = (*self._expand(raw_parts[:-1], counters), raw_parts[-1])
                counters[parts] = counters.get(parts, -1) + 1
                current = (*parts, counters[parts])
                self._add(current, n)
                continue
            m = self._TABLE_HDR.match(line)
            if m:
                current = self._expand(self._split(m.group(1)), counters)
                self._add(current, n)
                continue
            m = self._KEY.match(line)
            if m:
                path = (*current, *self._split(m.group(1)))
                self._add(path, n)
                rest = m.group(2).strip()
                if rest.startswith("{"):
                    for k in self._INLINE_KEY.findall(rest):
                        self._add((*path, k.strip("\"'")), n)

    @staticmethod
    def _split(dotted: str) -> tuple:
        return tuple(p.strip().strip("\"'") for p in re.findall(r'"[^"]*"|\'[^\']*\'|[^.]+', dotted))

    @staticmethod
    def _expand(parts: tuple, counters: dict[tuple, int]) -> tuple:
        out: list = []
        for p in parts:
            out.append(p)
            if tuple(out) in counters:
                out.append(counters[tuple(out)])
        return tuple(out)

    def _add(self, path: tuple, n: int) -> None:
        for k in range(1, len(path) + 1):
            self.lines.setdefault(path[:k], n)
        self.lines[path] = self.lines.get(path, n)

    def best(self, scopes: list[tuple], key: tuple) -> int | None:
        """Line of ``key`` in the scope (e.g. ``("defaults",)``, ``()``) where most of it is
        written; None when no scope holds even its first part (a scope's own line is no
        answer: a typo in [templates] must not point at [defaults])."""
        depth, line = 0, None
        for scope in scopes:
            for k in range(len(key), depth, -1):
                if (*scope, *key[:k]) in self.lines:
                    depth, line = k, self.lines[(*scope, *key[:k])]
                    break
        return line

    def find(self, path: tuple, exact: bool = False) -> int | None:
        """Line of ``path`` (or, unless ``exact``, of its longest known prefix)."""
        path = tuple(path)
        if not path:
            return None
        if path in self.lines:
            return self.lines[path]
        if exact:
            return None
        for k in range(len(path) - 1, 0, -1):
            if path[:k] in self.lines:
                return self.lines[path[:k]]
        return None
