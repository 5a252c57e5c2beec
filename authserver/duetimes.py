"""When keys leave, earliest first, in 12 bytes a key (issue 14: memory).

A heap of (time, kid) tuples cost ~190 B per key with a removal time: the
tuple, its int and a kid string of its own (the key table keeps no kid
strings). Here an entry is (time, slot in the key table): a binary heap in
two arrays, 4 + 4 bytes. Any int time: the times are kept in 32 bits until one
does not fit (past 2106, before 1970), which widens them to 64 for good.
"""

from __future__ import annotations

from array import array

__all__ = ["DueTimes"]


class DueTimes:
    """A min-heap of (time, slot); ties in any order."""

    __slots__ = ("_at", "_slot")

    def __init__(self) -> None:
        self._at = array("I")  # "q" once a time does not fit
        self._slot = array("I")

    def __len__(self) -> int:
        return len(self._at)

    def first(self) -> int | None:
        """The earliest time, or None."""
        return self._at[0] if self._at else None

    def push(self, at: int, slot: int) -> None:
        if self._at.typecode == "I" and not 0 <= at <= 0xFFFFFFFF:
            self._at = array("q", self._at)
        ats, slots = self._at, self._slot
        i = len(ats)
        ats.append(at)
        slots.append(slot)
        while i:  # sift up
            parent = (i - 1) >> 1
            if ats[parent] <= at:
                break
            ats[i], slots[i] = ats[parent], slots[parent]
            i = parent
        ats[i], slots[i] = at, slot

    def pop(self) -> tuple[int, int]:
        """Remove and return the earliest (time, slot); IndexError if empty."""
        ats, slots = self._at, self._slot
        top = ats[0], slots[0]
        at, slot = ats.pop(), slots.pop()
        n = len(ats)
        if n:
            i = 0
            while (child := 2 * i + 1) < n:  # sift down
                if child + 1 < n and ats[child + 1] < ats[child]:
                    child += 1
                if at <= ats[child]:
                    break
                ats[i], slots[i] = ats[child], slots[child]
                i = child
            ats[i], slots[i] = at, slot
        return top
