"""A bounded, thread-safe LRU cache: at most ``max_items`` entries and ``max_bytes`` bytes.

The server keeps every computed view here (explanations, filter grids, maximizations,
uploads), keyed by what the result depends on, so a repeated request costs a lookup. The
least recently used entries are evicted first; an entry larger than ``max_bytes`` on its own
is not stored at all. Counters (``hits``, ``misses``, ``evictions``) are exposed for the
``/api/stats`` endpoint and the tests.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

DEFAULT_MAX_ITEMS = 256
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


class LRUCache:
    """``get`` / ``put`` with the least recently used entry evicted past either bound."""

    def __init__(
        self, max_items: int = DEFAULT_MAX_ITEMS, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("max_items and max_bytes must be positive")
        self.max_items = int(max_items)
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value stored under ``key`` (now the most recently used), else ``default``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return default
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def peek(self, key: Hashable) -> Any:
        """The value under ``key`` or ``None``, without counting a hit or a miss."""
        with self._lock:
            entry = self._entries.get(key)
            return None if entry is None else entry[0]

    def put(self, key: Hashable, value: Any, nbytes: int) -> bool:
        """Store ``value`` (``nbytes`` large); ``False`` when it alone exceeds ``max_bytes``."""
        nbytes = max(0, int(nbytes))
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if nbytes > self.max_bytes:
                return False
            self._entries[key] = (value, nbytes)
            self._bytes += nbytes
            while len(self._entries) > self.max_items or self._bytes > self.max_bytes:
                _, (_, size) = self._entries.popitem(last=False)
                self._bytes -= size
                self.evictions += 1
            return True

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def nbytes(self) -> int:
        """The bytes held now."""
        with self._lock:
            return self._bytes

    def stats(self) -> dict[str, int]:
        """Counters and sizes, JSON-ready."""
        with self._lock:
            return {
                "items": len(self._entries),
                "bytes": self._bytes,
                "max_items": self.max_items,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
            }
