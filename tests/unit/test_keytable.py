"""The columnar key table (issue 14): against a dict, through adds, changes
and removals that shift its hash table's entries back, grow it and reuse
freed slots, with thumbprint kids and kids of any other form."""

from __future__ import annotations

import base64
import random

from authserver.keycache import PublishedKey
from authserver.keytable import KeyTable


def _key(kid: str, rng: random.Random) -> PublishedKey:
    kind = rng.choice(["api", "api", "pending", "admin"])
    return PublishedKey(
        kid, "acme", kind, rng.choice([kid, "user-1", "user-2"]), rng.choice([(), ("read",)]),
        rng.choice([(), ({"limit": 5, "window_seconds": 60},)]), rng.choice([None, 1_700_000_500]),
        rng.choice([None, 0, 3]), rng.choice([None, {"team": "a"}]), b"{}" if kind == "admin" else None,
        rng.choice(["sk_live_", "sk_live_s3_"]), 1_700_000_000 + rng.randrange(100), rng.random() < 0.5,
        rng.random() < 0.5)


def _thumbprints(rng: random.Random, n: int) -> list[str]:
    return [base64.urlsafe_b64encode(rng.randbytes(32)).rstrip(b"=").decode() for _ in range(n)]


def test_the_table_answers_as_a_dict_would() -> None:
    rng = random.Random(7)
    kids = _thumbprints(rng, 600) + ["sentinel", "x" * 43, "a\"b", "é", ""]
    table, model = KeyTable("acme"), dict[str, PublishedKey]()
    for step in range(4000):
        kid = rng.choice(kids)
        if rng.random() < 0.6:
            key = _key(kid, rng)
            table.put(key)
            model[kid] = key
        else:
            assert table.pop(kid) == model.pop(kid, None)
        if step % 500 == 0 or step == 3999:
            assert len(table) == len(model)
            assert sorted(table) == sorted(model)
            for k in kids:
                assert table.get(k) == model.get(k) and (k in table) == (k in model)
                assert table.kind(k) == (model[k].kind if k in model else None)
                assert table.removed_at(k) == (model[k].removed_at if k in model else None)
            assert sorted(table.values(), key=lambda k: k.kid) == sorted(model.values(), key=lambda k: k.kid)
            for kind in ("api", "pending", "admin"):
                assert table.count(kind) == sum(1 for k in model.values() if k.kind == kind)
