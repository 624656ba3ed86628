"""The intake page in headless Chromium against a real uvicorn server.

Chromium is Debian's package at /usr/bin/chromium, driven by Playwright without a
browser download of its own. Each test types a ticket, waits for the suggestion and
checks what the feedback store recorded. A screenshot of the page with a real
suggestion goes to the test's tmp_path and, when ``TRIAGE_ARTIFACTS`` names a folder,
there too.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from serving.feedback import FeedbackStore
from serving.page import STATIC_DIR

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
REPO = Path(__file__).resolve().parents[2]
SUGGESTION_TIMEOUT_MS = 30_000

FIRST = "数据库连接超时，ERP系统无法登录，多个用户受影响"
SECOND = "核心交换机端口频繁up/down，多个业务系统访问超时"
THIRD = "操作员误删了配置文件，导致营销系统部分功能不可用"


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} not found; install Debian's chromium package (make system-deps)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="zh-CN"
    )
    opened = context.new_page()
    opened.dialogs = []
    opened.errors = []
    opened.on(
        "dialog",
        lambda dialog: (opened.dialogs.append(dialog.message), dialog.dismiss()),
    )
    opened.on("pageerror", lambda error: opened.errors.append(str(error)))
    yield opened
    context.close()


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'feedback.db'}"


def server_env(demo_bundle: Path, db_url: str, **settings: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TRIAGE_BUNDLE_DIR": str(demo_bundle),
        "TRIAGE_FEEDBACK_DB_URL": db_url,
        "TRIAGE_POLL_SECONDS": "0",
        "TRIAGE_API_KEYS": "",
        "TRIAGE_ADMIN_KEYS": "",
    }
    env.update({f"TRIAGE_{k.upper()}": v for k, v in settings.items()})
    return env


UVICORN = [
    sys.executable,
    "-m",
    "uvicorn",
    "serving.main:app",
    "--host",
    "127.0.0.1",
    "--port",
    "{port}",
    "--log-level",
    "warning",
]


@pytest.fixture
def server(start_server, demo_bundle, db_url):
    started = start_server(UVICORN, server_env(demo_bundle, db_url))
    started.wait_ready()
    return started


def rows_in(db_url: str) -> list[dict]:
    store = FeedbackStore(db_url)
    try:
        return store.feedback_rows()
    finally:
        store.close()


def open_page(page, base: str) -> None:
    page.goto(f"{base}/")
    page.wait_for_function(
        "document.getElementById('model-info').textContent.startsWith('模型')",
        timeout=SUGGESTION_TIMEOUT_MS,
    )


def type_ticket(page, description: str) -> None:
    """Type the description key by key and wait for the suggestion to it."""
    page.click("#description")
    page.keyboard.type(description, delay=15)
    wait_for_suggestion(page, description)


def wait_for_suggestion(page, description: str) -> None:
    page.wait_for_function(
        """(text) => !document.getElementById('category-group').hidden
            && document.getElementById('suggestion').getAttribute('aria-busy') === 'false'
            && document.getElementById('description').value === text""",
        arg=description,
        timeout=SUGGESTION_TIMEOUT_MS,
    )


def wait_for_status(page, fragment: str) -> str:
    page.wait_for_function(
        "(text) => document.getElementById('status').textContent.includes(text)",
        arg=fragment,
        timeout=SUGGESTION_TIMEOUT_MS,
    )
    return page.text_content("#status")


def save_screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    artifacts = os.environ.get("TRIAGE_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / name)
    return path


def test_page_accept_and_correct(page, server, db_url, tmp_path):
    """Accept one suggestion with Enter, correct the second with the mouse and the
    third with the keyboard alone; the store has the three decisions."""
    score_requests = []
    page.on(
        "request",
        lambda request: (
            score_requests.append(request)
            if request.url.endswith("/v1/score")
            else None
        ),
    )
    open_page(page, server.base)
    page.fill("#operator", "op-01")

    # Ticket 1: suggestions appear while typing; Enter accepts them.
    first_id = page.input_value("#ticket-id")
    type_ticket(page, FIRST)
    bars = page.locator("#category-options .bar-choice")
    assert bars.count() == 4
    assert page.locator("#category-options input:checked").count() == 1
    assert page.locator("#category-options .badge").count() == 1
    widths = page.eval_on_selector_all(
        "#category-options .bar-fill",
        "nodes => nodes.map(n => n.getBoundingClientRect().width)",
    )
    assert max(widths) > 100
    assert page.locator("#cause-options .cause-card").count() == 3
    assert page.locator("#cause-options .measures li").count() > 0
    assert not page.is_hidden("#escalation")
    assert len(score_requests) < len(FIRST) / 2, "scoring is not debounced"
    assert page.text_content("#submit") == "采纳建议"
    shot = save_screenshot(page, tmp_path, "intake-page.png")
    assert shot.stat().st_size > 10_000

    suggested_first = page.get_attribute("#category-options input:checked", "value")
    page.press("#description", "Enter")
    status = wait_for_status(page, "已采纳建议")
    assert first_id in status
    assert page.input_value("#description") == ""
    assert page.input_value("#ticket-id") != first_id

    # Ticket 2: pick another category and another cause with the mouse.
    second_id = page.input_value("#ticket-id")
    type_ticket(page, SECOND)
    suggested_second = page.get_attribute("#category-options input:checked", "value")
    other = page.locator("#category-options input:not(:checked)").first
    picked_category = other.get_attribute("value")
    page.click(f"label[for='category-{picked_category}']")
    top_cause = page.get_attribute("#cause-options input:checked", "value")
    options = page.eval_on_selector_all(
        "#cause-other option", "nodes => nodes.map(n => n.value)"
    )
    picked_cause = next(v for v in options if v and v != top_cause)
    page.select_option("#cause-other", picked_cause)
    assert page.text_content("#submit") == "提交更正"
    page.click("#submit")
    wait_for_status(page, "已记录更正")

    # Ticket 3: keyboard only. Tab walks the pickers into the category choices,
    # an arrow key picks another category and Enter records it.
    third_id = page.input_value("#ticket-id")
    type_ticket(page, THIRD)
    suggested_third = page.get_attribute("#category-options input:checked", "value")
    page.focus("#description")
    visited = []
    for _ in range(8):
        page.keyboard.press("Tab")
        visited.append(page.evaluate("document.activeElement.id"))
        if visited[-1].startswith("category-"):
            break
    assert visited[:3] == ["department", "channel", "system"]
    assert visited[-1] == f"category-{suggested_third}"
    page.keyboard.press("ArrowDown")
    keyed_category = page.get_attribute("#category-options input:checked", "value")
    assert keyed_category != suggested_third
    page.keyboard.press("Enter")
    wait_for_status(page, "已记录更正")

    rows = {r["ticket_id"]: r for r in rows_in(db_url)}
    assert set(rows) == {first_id, second_id, third_id}
    accepted = rows[first_id]
    assert accepted["accepted"] is True
    assert (
        accepted["chosen_category"] == accepted["suggested_category"] == suggested_first
    )
    assert accepted["chosen_root_cause"] == accepted["suggested_root_cause"]
    assert accepted["operator_id"] == "op-01"
    assert accepted["model_name"] == "demo-test"
    assert accepted["score_request_id"]
    corrected = rows[second_id]
    assert corrected["accepted"] is False
    assert corrected["suggested_category"] == suggested_second
    assert corrected["chosen_category"] == picked_category
    assert corrected["chosen_root_cause"] == picked_cause
    keyed = rows[third_id]
    assert keyed["accepted"] is False
    assert keyed["chosen_category"] == keyed_category
    assert page.dialogs == []
    assert page.errors == []


MARKUP = '<script>alert(1)</script><img src=x onerror="window.__xss=1">'


def add_similar_and_reasons(route) -> None:
    """Pass the score request to the server and add ``similar`` and ``reasons``
    parts whose texts are markup, as a stored ticket's text could be."""
    response = route.fetch()
    answer = response.json()
    answer["similar"] = [
        {
            "ticket_id": '<img src=x onerror="window.__xss=2">',
            "description": "历史工单：" + MARKUP,
            "category": "system",
            "root_cause": "crash",
            "similarity": 0.87,
        }
    ]
    answer["reasons"] = [
        {"token": "<script>", "weight": 0.4},
        {"token": "alert", "weight": 0.2},
    ]
    route.fulfill(response=response, body=json.dumps(answer, ensure_ascii=False))


def test_page_renders_markup_as_text(page, server, db_url):
    page.route("**/v1/score", add_similar_and_reasons)
    open_page(page, server.base)
    page.fill("#operator", "op-02")
    page.fill("#ticket-id", "<b>T-XSS</b>")
    type_ticket(page, f"系统报错 {MARKUP}")

    assert page.evaluate("window.__xss") is None
    assert page.locator("script").count() == 1  # app.js only
    assert page.locator("#similar-list img, #reason-text img, #status b").count() == 0
    assert MARKUP in page.text_content("#similar-list")
    assert '<img src=x onerror="window.__xss=2">' in page.text_content("#similar-list")
    marks = page.eval_on_selector_all(
        "#reason-text mark", "nodes => nodes.map(n => n.textContent)"
    )
    assert "<script>" in marks
    assert "alert" in marks

    page.press("#description", "Enter")
    status = wait_for_status(page, "已采纳建议")
    assert "<b>T-XSS</b>" in status
    assert page.locator("#status b").count() == 0
    assert page.evaluate("window.__xss") is None
    assert page.dialogs == []
    assert [r["ticket_id"] for r in rows_in(db_url)] == ["<b>T-XSS</b>"]


def test_page_sends_key_typed_by_operator(page, start_server, demo_bundle, db_url):
    """With API keys set, the page requests a key, keeps it in sessionStorage and
    sends it on every call. The page's own files are served from disk here, so the
    test does not depend on whether the server lets them through without a key."""
    key = "page-key-0123456789"
    server = start_server(UVICORN, server_env(demo_bundle, db_url, api_keys=key))
    server.wait_ready()

    def from_disk(route) -> None:
        name = route.request.url.rsplit("/", 1)[-1] or "index.html"
        route.fulfill(path=str(STATIC_DIR / name))

    page.route(f"{server.base}/", from_disk)
    page.route(f"{server.base}/static/*", from_disk)
    page.goto(f"{server.base}/")
    wait_for_status(page, "API 密钥")
    assert page.evaluate("document.getElementById('key-panel').open") is True

    page.fill("#api-key", key)
    page.press("#api-key", "Enter")
    page.wait_for_function(
        "document.getElementById('model-info').textContent.startsWith('模型')",
        timeout=SUGGESTION_TIMEOUT_MS,
    )
    assert page.evaluate("sessionStorage.getItem('triage.apiKey')") == key
    assert page.input_value("#api-key") == ""

    page.reload()
    page.wait_for_function(
        "document.getElementById('model-info').textContent.startsWith('模型')",
        timeout=SUGGESTION_TIMEOUT_MS,
    )
    page.fill("#operator", "op-03")
    type_ticket(page, FIRST)
    page.press("#description", "Enter")
    wait_for_status(page, "已采纳建议")
    assert len(rows_in(db_url)) == 1
