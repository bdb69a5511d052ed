"""One typed registry type for ops, attacks, data sets and objectives (fvcore style)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Mapping[str, T], Generic[T]):
    """A name -> object mapping that refuses duplicates and names the valid set on a miss.

    Example:
        >>> OPS: Registry[int] = Registry("op")
        >>> @OPS.register("one")
        ... def _one() -> int:
        ...     return 1
        >>> OPS.get_or_raise("two")
        Traceback (most recent call last):
        KeyError: "unknown op 'two'; valid: ['one']"
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise KeyError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj

    def get_or_raise(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise KeyError(f"unknown {self.kind} {name!r}; valid: {sorted(self._items)}") from None

    def __getitem__(self, name: str) -> T:
        return self.get_or_raise(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
