"""What the one-pass bank's stacks hold, checked against their families."""

from __future__ import annotations

from app.serving.onepass.bank import Bank, family_of


def written_bytes(bank: Bank) -> int:
    """The bytes of the rows every stack of `bank` has written, checked against its families:
    a table has written exactly the rows its family handed out (`Rows.top`)."""
    total = 0
    for key, stack in bank.tables.items():
        assert stack.ready == bank.families[family_of(key)].rows.top, key
        total += sum(t[: stack.ready].numel() * t.element_size() for t in stack.tensors.values())
    return total
