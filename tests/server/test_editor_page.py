"""The Write With Transformer page at / in a real browser (Debian's chromium, driven by Playwright) against a
real ``tinygpt serve``: Tab streams three continuations of the text before the cursor, the arrows and Enter
insert the chosen one there, Esc and typing dismiss them (typing also aborts their request), server errors
reach the status line, and a 380-pixel-wide window still shows them whole. The small model has random
weights, so the suggestions are gibberish; only their arrival and handling are checked."""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

import httpx
import pytest
from serving import running_server

CHROMIUM = Path("/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright for Python (the test extra)")
if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)

CHROMIUM_FLAGS = ["--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
GENERATION_TIMEOUT_MS = 120_000  # three streams from a model that may still be compiling, on a busy machine
OPTIONS = "#suggestions [role=option]"
STREAM_ENDED = f"""() => {{
    const list = document.getElementById('suggestions');
    return !list.hidden && list.getAttribute('aria-busy') === 'false'
        && document.querySelectorAll('{OPTIONS}').length === 3;
}}"""
# Every text each suggestion shows, in order, as the page updates it: evidence that the text streams in.
RECORD_SUGGESTION_TEXTS = f"""() => {{
    window.shownTexts = [[], [], []];
    const record = () => document.querySelectorAll('{OPTIONS} .text').forEach((node, index) => {{
        const shown = window.shownTexts[index];
        if (shown[shown.length - 1] !== node.textContent) shown.push(node.textContent);
    }});
    new MutationObserver(record).observe(document.getElementById('suggestions'),
                                         {{subtree: true, childList: true, characterData: true}});
}}"""


@pytest.fixture(scope="module")
def browser():
    flags = CHROMIUM_FLAGS + (["--no-sandbox"] if os.geteuid() == 0 else [])  # chromium's sandbox refuses root
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=flags)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    """A fresh page (empty localStorage) at /, failing the test on any script error it logs."""
    with editor_page(browser, server) as page:
        page.wait_for_function("document.getElementById('model-name').textContent !== 'connecting…'")
        yield page


@contextlib.contextmanager
def editor_page(browser, url: str):
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    page.set_default_timeout(GENERATION_TIMEOUT_MS)
    script_errors = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and not message.text.startswith(
        "Failed to load resource") and script_errors.append(message.text))  # (4xx answers are tested as such)
    page.goto(url + "/")
    try:
        yield page
    finally:
        context.close()
    assert script_errors == []


def editor_state(page) -> tuple[str, int]:
    """The editor's text and where its cursor is."""
    value, cursor = page.evaluate("() => { const e = document.getElementById('editor'); "
                                  "return [e.value, e.selectionStart]; }")
    return value, cursor


def suggestion_texts(page) -> list[str]:
    return page.locator(f"{OPTIONS} .text").all_text_contents()


def test_tab_streams_three_suggestions_and_arrows_enter_insert_one_at_the_cursor(page, server, tmp_path):
    model_id = httpx.get(server + "/v1/models").json()["data"][0]["id"]
    assert page.locator("#model-name").text_content() == model_id
    editor = page.locator("#editor")
    editor.click()
    ending = " The end."
    page.keyboard.type("It was a dark and stormy night, and the old lighthouse keeper" + ending)
    for _ in ending:  # the cursor goes before the ending: the prompt is the text before the cursor only
        page.keyboard.press("ArrowLeft")
    document, cursor = editor_state(page)
    page.evaluate(RECORD_SUGGESTION_TEXTS)

    with page.expect_request("**/v1/completions") as sent:
        page.keyboard.press("Tab")
    assert sent.value.post_data_json == {
        "model": model_id, "prompt": document[:cursor], "max_tokens": 24, "temperature": 0.8, "n": 3,
        "stream": True, "stream_options": {"include_usage": True}}
    page.wait_for_function(STREAM_ENDED)

    texts = suggestion_texts(page)
    assert len(texts) == 3 and all(text != "" for text in texts)
    shown = page.evaluate("window.shownTexts")
    for index, history in enumerate(shown):
        assert history[-1] == texts[index]
        assert len([text for text in history if text]) >= 2, f"suggestion {index} arrived in one piece: {history}"
        assert all(later.startswith(earlier) for earlier, later in zip(history, history[1:]))
    assert editor_state(page) == (document, cursor)  # nothing changes before a suggestion is chosen
    assert re.fullmatch(r"\d+(\.\d+)? tok/s", page.locator("#speed").text_content().strip())
    assert page.locator("#suggestions").get_attribute("role") == "listbox"
    options = page.locator(OPTIONS)
    assert [options.nth(i).get_attribute("aria-selected") for i in range(3)] == ["false"] * 3

    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert [options.nth(i).get_attribute("aria-selected") for i in range(3)] == ["false", "true", "false"]
    assert editor.get_attribute("aria-activedescendant") == options.nth(1).get_attribute("id")
    assert page.evaluate("document.activeElement.id") == "editor"  # the list never takes the focus
    screenshot = tmp_path / "editor-suggestions.png"
    page.screenshot(path=screenshot)
    print(f"screenshot: {screenshot}")

    page.keyboard.press("Enter")
    chosen = texts[1]
    assert editor_state(page) == (document[:cursor] + chosen + document[cursor:], cursor + len(chosen))
    assert page.locator("#suggestions").is_hidden()
    page.keyboard.press("Control+z")  # the insertion is one step of the browser's own undo history
    assert editor_state(page)[0] == document


def test_escape_dismisses_the_suggestions_and_leaves_the_text_alone(page):
    page.locator("#editor").click()
    page.keyboard.type("A quiet morning")
    page.keyboard.press("Tab")
    page.wait_for_function(STREAM_ENDED)
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Escape")
    assert page.locator("#suggestions").is_hidden()
    assert editor_state(page) == ("A quiet morning", len("A quiet morning"))
    page.keyboard.press("Enter")  # with the list gone, Enter is a new line again
    assert editor_state(page)[0] == "A quiet morning\n"


def test_a_click_inserts_a_suggestion_and_the_editor_keeps_the_focus(page):
    page.locator("#editor").click()
    page.keyboard.type("Dear friend,")
    page.keyboard.press("Tab")
    page.wait_for_function(STREAM_ENDED)
    third = suggestion_texts(page)[2]
    page.locator(OPTIONS).nth(2).click()
    assert editor_state(page) == ("Dear friend," + third, len("Dear friend," + third))
    assert page.evaluate("document.activeElement.id") == "editor"
    assert page.locator("#suggestions").is_hidden()


def cancelled_requests(server: str) -> float:
    """The server's count of requests it stopped because their client went away (from /metrics)."""
    name = 'tinygpt_requests_finished_total{reason="cancelled"}'
    text = httpx.get(server + "/metrics").text
    values = [float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert values, f"{name} is not in /metrics:\n{text}"
    return values[0]


def test_typing_while_suggestions_stream_dismisses_them_and_aborts_the_request(page, server):
    cancelled_before = cancelled_requests(server)
    failed = []
    page.on("requestfailed", lambda request: failed.append((request.url, request.failure)))
    page.locator("#max-tokens").fill("240")  # a long request (the model's context is 256), still streaming...
    page.locator("#editor").click()
    page.keyboard.type("Once upon a time")
    page.keyboard.press("Tab")
    page.wait_for_function(f"[...document.querySelectorAll('{OPTIONS} .text')].some(node => node.textContent)")
    page.keyboard.type(", there")  # ...when typing resumes (its request is aborted below, so it had not ended)

    page.wait_for_function("() => document.getElementById('suggestions').hidden")
    page.wait_for_timeout(500)  # pieces still on their way must not bring the list back
    assert page.locator("#suggestions").is_hidden()
    assert page.locator(OPTIONS).count() == 0
    assert editor_state(page) == ("Once upon a time, there", len("Once upon a time, there"))
    assert [url for url, _ in failed] == [page.url + "v1/completions"]
    assert "ABORTED" in failed[0][1]
    # The abort reaches the server, which stops generating for the closed stream.
    deadline = time.monotonic() + 20
    while cancelled_requests(server) == cancelled_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cancelled_requests(server) == cancelled_before + 1


def test_a_server_error_shows_in_the_status_line(page, server):
    page.locator("#max-tokens").fill("100000")  # far past the model's context
    page.locator("#editor").click()
    page.keyboard.type("Too long a wish")
    model_id = page.locator("#model-name").text_content()
    answer = httpx.post(server + "/v1/completions", json={
        "model": model_id, "prompt": "Too long a wish", "max_tokens": 100000, "temperature": 0.8, "n": 3,
        "stream": True, "stream_options": {"include_usage": True}})
    assert answer.status_code == 400
    page.keyboard.press("Tab")
    status = page.locator("#status")
    page.wait_for_function("document.getElementById('status').dataset.kind === 'error'")
    assert status.text_content() == f"The server answered 400: {answer.json()['error']['message']}"
    assert page.locator("#suggestions").is_hidden()
    assert editor_state(page)[0] == "Too long a wish"


def test_settings_come_before_the_editor_and_shift_tab_leaves_it(page):
    order = []
    for _ in range(4):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id"))
    assert order == ["max-tokens", "temperature", "api-key", "editor"]
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.id") == "api-key"
    help_text = page.locator("#help").text_content()
    for words in ("Tab", "Enter", "Esc", "Shift"):
        assert words in help_text


def test_a_narrow_window_shows_the_suggestions_whole(page, tmp_path):
    width, height = 380, 700
    page.set_viewport_size({"width": width, "height": height})
    page.locator("#editor").click()
    page.keyboard.type("The harbour was empty that winter. Nobody remembered when the last boat had come in, "
                       "or who had tied the rope that still hung from the pier, grey and stiff with salt")
    page.keyboard.press("Tab")
    page.wait_for_function(STREAM_ENDED)
    page.keyboard.press("ArrowDown")
    box = page.locator("#suggestions").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= width
    assert box["y"] >= 0 and box["y"] + box["height"] <= height
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing sticks out sideways
    screenshot = tmp_path / "editor-narrow.png"
    page.screenshot(path=screenshot)
    print(f"screenshot: {screenshot}")


def test_the_api_key_field_unlocks_a_server_started_with_api_key(browser, small_gpt2_dir):
    key = "a-key-for-the-editor-test"
    with running_server(small_gpt2_dir, "--api-key", key) as url, editor_page(browser, url) as page:
        status = page.locator("#status")
        page.wait_for_function("document.getElementById('status').dataset.kind === 'error'")
        refusal = httpx.get(url + "/v1/models")
        assert refusal.status_code == 401
        assert status.text_content() == (f"The server answered 401: {refusal.json()['error']['message']} "
                                         "Fill in the API key field above.")

        page.locator("#api-key").fill(key)
        page.keyboard.press("Tab")  # on to the editor; leaving the field stores the key and asks again
        model_id = httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).json()["data"][0]["id"]
        page.wait_for_function(f"document.getElementById('model-name').textContent === {model_id!r}")
        assert page.evaluate("document.activeElement.id") == "editor"
        page.keyboard.type("Behind the door")
        with page.expect_request("**/v1/completions") as sent:
            page.keyboard.press("Tab")
        assert sent.value.headers["authorization"] == f"Bearer {key}"
        page.wait_for_function(STREAM_ENDED)
        assert all(text != "" for text in suggestion_texts(page))

        page.reload()  # the key is kept in localStorage
        assert page.locator("#api-key").input_value() == key
        page.wait_for_function(f"document.getElementById('model-name').textContent === {model_id!r}")
