"""The portal's usage views over HTTP, on SQLite and PostgreSQL: the key list's
"Last used" column and a key's page with its 14-day chart (inline SVG, no
script or inline style) and the same numbers as text. Usage rows go in
through the usage service, as the access-log service writes them."""

from __future__ import annotations

import html
import re
import time

from authserver.offline import open_core
from authserver.portal.render import ago
from authserver.services.usage import UsageRecorder

DAY = 86400


async def _mint(client, admin_headers, name: str) -> str:
    r = await client.post("/v1/keys", json={"name": name}, headers=admin_headers)
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def _record(make_settings, calls: list[tuple[str, int, int]]) -> None:
    """Usage as the access-log service records it, in batches, through the usage
    service on its own engine (the test client runs the app in another loop)."""
    async with open_core(make_settings()) as core:
        rec = UsageRecorder(core.sessions)
        for kid, status, at in calls:
            rec.record("default", kid, status, at)
        assert await rec.flush() == len(calls)


def _row(page: str, kid: str) -> str:
    m = re.search(rf'<tr data-key-id="{kid}".*?</tr>', page, re.S)
    assert m, kid
    return m.group(0)


async def test_key_list_shows_last_used_relative_with_the_exact_time(portal, client, admin_headers, clock,
                                                                    make_settings):
    used, unused = await _mint(client, admin_headers, "used"), await _mint(client, admin_headers, "unused")
    at = int(clock.now) - 3 * 3600 - 120
    await _record(make_settings, [(used, 200, at)])
    page = (await portal.get("/portal/keys")).text
    assert '<th scope="col" class="col-used">Last used</th>' in page
    cell = _row(page, used)
    assert ">3 hours ago</time>" in cell
    exact = re.search(r'<time class="last-used" datetime="([^"]+)" title="([^"]+)"', cell)
    assert exact, cell
    assert exact.group(2) == html.escape(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at)))
    assert 'class="muted last-used">never<' in _row(page, unused)
    assert f'href="/portal/keys/{used}"' in cell  # the name leads to the key's page


def test_relative_times():
    now = 1_800_000_000
    assert ago(None, now) == "never"
    assert ago(now - 5, now) == "just now" and ago(now + 30, now) == "just now"  # a gateway clock ahead
    assert ago(now - 60, now) == "1 minute ago" and ago(now - 3599, now) == "59 minutes ago"
    assert ago(now - 2 * DAY - 5, now) == "2 days ago" and ago(now - 400 * DAY, now) == "1 year ago"


async def test_key_page_chart_and_table_show_the_last_14_days(portal, client, admin_headers, clock, make_settings):
    kid = await _mint(client, admin_headers, "chart me")
    other = await _mint(client, admin_headers, "someone else")
    today = int(clock.now) // DAY * DAY
    await _record(make_settings, [
        *[(kid, 200, today + 10)] * 30,
        *[(kid, 404, today - 2 * DAY + 10)] * 4,
        (kid, 503, today - 2 * DAY + 20),
        (kid, 200, today - 20 * DAY),  # before the window: not in the chart
        (other, 500, today + 10),  # another key's calls are not this one's
    ])

    r = await portal.get(f"/portal/keys/{kid}")
    page = r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert not re.search(r"<script(?![^>]*\bsrc=)", page) and " style=" not in page and "<style" not in page
    # the chart: one group per day, bars only for the classes there were, scaled to the busiest day
    svg = re.search(r'<svg class="usage-chart".*?</svg>', page, re.S).group(0)
    assert 'role="img"' in svg and 'aria-labelledby="usage-chart-title usage-summary"' in svg
    assert len(re.findall(r'<g class="day"', svg)) == 14
    bars = re.findall(r'<rect class="bar s(\dxx)" x="[^"]+" y="([^"]+)" width="[^"]+" height="([^"]+)"', svg)
    assert sorted(c for c, _, _ in bars) == ["2xx", "4xx", "5xx"]
    heights = {c: float(h) for c, _, h in bars}
    assert heights["2xx"] == max(heights.values()) and heights["4xx"] > heights["5xx"] > 0
    assert f"{time_day(today)}: 30 requests, 30 2xx</title>" in svg
    assert f"{time_day(today - 2 * DAY)}: 5 requests, 4 4xx, 1 5xx</title>" in svg
    # the same numbers as text: a summary the chart is labelled by, and a table
    summary = re.search(r'<p id="usage-summary"[^>]*>(.*?)</p>', page, re.S).group(1)
    assert " ".join(summary.split()) == "35 requests through the gateways: 30 2xx, 4 4xx, 1 5xx. Busiest day: 30."
    table = re.search(r"<table>.*?</table>", page, re.S).group(0)
    assert len(re.findall(r'<tr><th scope="row">', table)) == 14
    assert f'{time_day(today - 2 * DAY)}</time></th><td>0</td><td>4</td><td>1</td><td>5</td>' in table
    assert f'title="{time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(today + 10))}">' in page
    assert f">{ago(today + 10, clock.now)}</time>" in page


async def test_key_page_without_usage_and_of_another_tenant(portal, client, admin_headers):
    kid = await _mint(client, admin_headers, "quiet")
    page = (await portal.get(f"/portal/keys/{kid}")).text
    assert "No requests reported by the gateways in the last 14 days." in page
    assert '<rect class="bar' not in page and len(re.findall(r'<g class="day"', page)) == 14
    assert 'class="muted last-used">never<' in page
    for bad in ("nope", "x" * 300, "%00"):
        await portal.get(f"/portal/keys/{bad}", expect=404)


def time_day(ts: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))
