"""The dashboard in headless Chromium over `adclick serve --auth-token-file`: it takes the token from the URL's
fragment (then drops it from the address bar) or asks for it once, keeps it in sessionStorage, and shows the
numbers plain Python counts; without a token the banner shows the API's 401 line."""

import secrets

import pytest

from sinks import sink_for
from tests.servers.api import api_server
from tests.serving_cases import MINUTE, T0, expected_top, load

pytestmark = pytest.mark.browser
LATEST = T0 + 3 * MINUTE
TOKEN = secrets.token_urlsafe(32)


@pytest.fixture
def base(tmp_path):
    db = tmp_path / "clicks.db"
    load(sink_for(f"sqlite:///{db}"), tmp_path / "dead.jsonl")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    with api_server(f"sqlite:///{db}", tmp_path / "serve.log", "--auth-token-file", str(token_file)) as (url, _):
        yield url


def shown_top(page):
    page.wait_for_function("Number(document.body.dataset.refreshes || 0) > 0", timeout=15_000)
    return [(row.get_attribute("data-ad"), int(row.query_selector_all("td")[2].inner_text().replace(",", "")))
            for row in page.query_selector_all("#top tbody tr[data-ad]")]


EXPECTED = expected_top(LATEST - 4 * MINUTE, LATEST + MINUTE, count=20)  # the last 5 minutes up to the newest


def test_the_token_in_the_fragment_is_kept_for_the_tab_and_leaves_the_address_bar(base, page):
    asked = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.goto(f"{base}/dashboard/#token={TOKEN}")
    assert shown_top(page) == EXPECTED
    assert "#" not in page.url and TOKEN not in page.url
    assert page.evaluate("sessionStorage.getItem('adclick-token')") == TOKEN
    assert asked == [] and page.is_hidden("#error")


def test_without_one_it_asks_and_asks_again_after_a_wrong_one(base, page):
    answers = ["not-the-token", TOKEN]
    asked = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept(answers[len(asked) - 1])))
    page.goto(f"{base}/dashboard/")
    assert shown_top(page) == EXPECTED
    assert len(asked) == 2  # the wrong one, then the right one: never one prompt per request
    assert page.evaluate("sessionStorage.getItem('adclick-token')") == TOKEN


def test_no_token_given_is_the_apis_401_line_in_the_banner(base, page):
    page.on("dialog", lambda dialog: dialog.dismiss())
    page.goto(f"{base}/dashboard/")
    page.wait_for_function("document.getElementById('error').textContent.includes('Bearer TOKEN')", timeout=15_000)
    assert page.is_visible("#error")
    assert page.query_selector_all("#top tbody tr[data-ad]") == []
