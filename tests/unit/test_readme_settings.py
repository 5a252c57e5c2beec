"""README's configuration table and authserver.settings.Settings agree: every
field has a row, every row names a field, and each default shown is the
field's default (issue 16, item 15)."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from authserver.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _table(text: str | None = None) -> dict[str, str]:
    """{variable: default cell} from the table of the Configuration section."""
    text = README.read_text() if text is None else text
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`AUTHSERVER_"):
            continue
        names = re.findall(r"`([^`]+)`", cells[0])
        assert len(names) == 1, f"one variable per row, got {names}"
        assert names[0] not in rows, f"{names[0]} has two rows"
        rows[names[0]] = cells[1]
    return rows


def _shown(cell: str) -> str | None:
    found = re.match(r"`([^`]*)`", cell)
    return found.group(1) if found else None


def test_every_setting_has_a_row_and_every_row_a_setting():
    rows = _table()
    fields = {f"AUTHSERVER_{f.name.upper()}": f for f in msgspec.structs.fields(Settings)}
    assert sorted(set(fields) - set(rows)) == [], "settings missing from README's configuration table"
    assert sorted(set(rows) - set(fields)) == [], "README rows naming no setting"


def test_the_defaults_shown_are_the_defaults():
    rows = _table()
    for f in msgspec.structs.fields(Settings):
        var, cell, default = f"AUTHSERVER_{f.name.upper()}", rows.get(f"AUTHSERVER_{f.name.upper()}"), f.default
        if cell is None:
            continue  # reported by the test above
        shown = _shown(cell)
        if default is None:
            assert cell.startswith("unset"), (var, cell)
        elif default == "":
            assert cell.startswith("empty"), (var, cell)
        elif isinstance(default, bool):
            assert shown == str(default).lower(), (var, cell)
        elif isinstance(default, int | float):
            assert shown is not None and float(shown) == default, (var, cell, default)
        else:
            assert shown == default, (var, cell, default)


def test_the_table_parser_sees_missing_and_unknown_rows():
    """The check can fail: a README without a row, and with a stray one."""
    text = README.read_text()
    changed = re.sub(r"^\| `AUTHSERVER_LOG_JSON` \|.*\n", "", text, flags=re.M)
    stray = "| `AUTHSERVER_NOT_A_SETTING` | `1` | |\n"
    changed = changed.replace("| `AUTHSERVER_LOG_LEVEL` |", stray + "| `AUTHSERVER_LOG_LEVEL` |")
    rows, fields = _table(changed), {f"AUTHSERVER_{f.name.upper()}" for f in msgspec.structs.fields(Settings)}
    assert fields - set(rows) == {"AUTHSERVER_LOG_JSON"} and set(rows) - fields == {"AUTHSERVER_NOT_A_SETTING"}
