"""The sessions web pages in a real browser (headless Chromium driven by Playwright), against
``aibridge up`` fed by the official SDKs with session keys.

Without Chromium (Debian's ``chromium`` package, which ``scripts/test`` installs as root) these tests
skip, except in CI (``CI=true``), where they fail. ``AIBRIDGE_PAGE_SCREENSHOTS=<dir>`` also saves the
screenshots of the list and a session there (how docs/images/ is refreshed).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jwt
import openai
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from aibridge.auth import Role, issue_token, load_private_key
from aibridge.testing.broker import free_port

pytestmark = pytest.mark.slow

VIEWPORT = {"width": 1366, "height": 768}
PROMPT = "What is the weather in Paris? <script>document.title='owned'</script> & <b>bold</b>"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
WEATHER_TOOL_ANTHROPIC = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "no Chromium: install Debian's chromium package (scripts/test does as root)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " and CI=true requires these browser tests")
    pytest.skip("SKIPPED, NOT CHECKED: " + reason)


@dataclass
class Bridge:
    url: str
    data_dir: Path
    process: subprocess.Popen[str]
    output: list[str]

    def token(self, user: str, role: Role = Role.MEMBER) -> str:
        return issue_token(load_private_key(self.data_dir / "keys" / "signing_key.pem"), user, role=role)


@dataclass
class Traffic:
    alice_chat: str  # alice's session through the OpenAI SDK: a prompt, a tool call, its result, an answer
    alice_claude: str  # alice's session with Claude Code's own header, through the Anthropic SDK
    bob_chat: str
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    data_dir = tmp_path_factory.mktemp("pages") / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIBRIDGE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "aibridge.cli", "up", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(process.stdout or []), daemon=True).start()
    running = Bridge(f"http://127.0.0.1:{port}", data_dir, process, output)
    try:
        _wait_ready(running)
        yield running
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(bridge: Bridge) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if bridge.process.poll() is not None:
            raise AssertionError("aibridge up exited:\n" + "".join(bridge.output))
        try:
            if httpx.get(f"{bridge.url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("aibridge up did not become ready:\n" + "".join(bridge.output))


@pytest.fixture(scope="module")
def traffic(bridge: Bridge) -> Traffic:
    tokens = {
        "alice": bridge.token("alice"),
        "bob": bridge.token("bob"),
        "admin": bridge.token("root", Role.ADMIN),
    }
    run = uuid.uuid4().hex[:8]
    found = Traffic(f"chat-alice-{run}", f"claude-alice-{run}", f"chat-bob-{run}", tokens)
    _chat_session(bridge, tokens["alice"], found.alice_chat)
    _claude_code_session(bridge, tokens["alice"], found.alice_claude)
    _chat_session(bridge, tokens["bob"], found.bob_chat)
    _wait_recorded(bridge, tokens["admin"], {found.alice_chat: 2, found.alice_claude: 1, found.bob_chat: 2})
    return found


def _chat_session(bridge: Bridge, token: str, session: str) -> None:
    """A prompt that makes the model call a tool, then the tool's result sent back for the answer."""
    client = openai.OpenAI(
        base_url=f"{bridge.url}/api/v2/aibridge/openai/v1",
        api_key=token,
        max_retries=0,
        default_headers={"X-Aibridge-Session-Id": session},
    )
    messages: list[Any] = [{"role": "user", "content": PROMPT}]
    first = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])
    calls = first.choices[0].message.tool_calls
    assert calls, "the simulated provider should call the offered tool"
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": calls[0].id, "content": "Sunny, 21 C"})
    answer = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])
    assert answer.choices[0].message.content


def _claude_code_session(bridge: Bridge, token: str, session: str) -> None:
    client = anthropic.Anthropic(
        base_url=f"{bridge.url}/api/v2/aibridge/anthropic",
        api_key=token,
        max_retries=0,
        default_headers={"x-claude-code-session-id": session},
    )
    with client.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=256,
        messages=[{"role": "user", "content": "Plan a picnic in Lyon"}],
        tools=[WEATHER_TOOL_ANTHROPIC],  # type: ignore[list-item]
    ) as stream:
        assert stream.get_final_message().content


def _wait_recorded(bridge: Bridge, token: str, expected: dict[str, int]) -> None:
    """Until each session lists its finished interceptions through the JSON API (recording is asynchronous)."""
    deadline = time.monotonic() + 30
    seen: dict[str, int] = {}
    while time.monotonic() < deadline:
        body = httpx.get(
            f"{bridge.url}/api/v2/aibridge/sessions", headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).json()
        seen = {row["id"]: row["interceptions"] for row in body.get("results", [])}
        if all(seen.get(session) == count for session, count in expected.items()):
            return
        time.sleep(0.3)
    raise AssertionError(f"sessions not recorded in time: expected {expected}, saw {seen}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    opened = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    yield opened
    opened.close()


def sign_in(page: Page, bridge: Bridge, token: str, start: str = "/aibridge/sessions") -> None:
    page.goto(bridge.url + start)
    assert "/aibridge/login" in page.url, "a page asked for without a sign-in goes to the sign-in form"
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def session_ids_on(page: Page) -> list[str]:
    return page.locator("table.sessions tbody tr td:first-child").all_inner_texts()


def screenshot(page: Page, tmp_path: Path, name: str) -> None:
    shot = page.screenshot(path=str(tmp_path / name), full_page=False)
    assert len(shot) > 10_000, "a screenshot of a rendered page"
    target = os.environ.get("AIBRIDGE_PAGE_SCREENSHOTS")
    if target:
        shutil.copy(tmp_path / name, Path(target) / name)


def test_an_auditor_signs_in_filters_and_reads_a_session(
    bridge: Bridge, traffic: Traffic, context: BrowserContext, tmp_path: Path
) -> None:
    page = context.new_page()
    sign_in(page, bridge, traffic.tokens["admin"])
    assert page.url.endswith("/aibridge/sessions")
    listed = session_ids_on(page)
    assert {traffic.alice_chat, traffic.alice_claude, traffic.bob_chat} <= set(listed)
    screenshot(page, tmp_path, "sessions-list.png")

    page.fill("input[name=initiator]", "alice")
    page.click("form.filters button[type=submit]")
    page.wait_for_load_state()
    assert sorted(session_ids_on(page)) == sorted([traffic.alice_chat, traffic.alice_claude])
    assert page.locator("input[name=initiator]").input_value() == "alice"

    page.fill("input[name=client]", "Claude Code")
    page.click("form.filters button[type=submit]")
    page.wait_for_load_state()
    assert session_ids_on(page) == [traffic.alice_claude]

    page.goto(f"{bridge.url}/aibridge/sessions?initiator=alice&client=Unknown")
    assert session_ids_on(page) == [traffic.alice_chat]
    page.click(f"text={traffic.alice_chat}")
    page.wait_for_load_state()
    assert page.url.endswith(f"/aibridge/sessions/{traffic.alice_chat}")

    detail = httpx.get(
        f"{bridge.url}/api/v2/aibridge/sessions/{traffic.alice_chat}",
        headers={"Authorization": f"Bearer {traffic.tokens['admin']}"},
    ).json()
    kinds = page.locator("ol.timeline > li .kind").all_inner_texts()
    assert kinds == ["Prompt", "Tool call", "Tool results sent back", "Answer"]
    assert page.locator("li.prompt pre.text").inner_text() == PROMPT
    assert page.locator("li.tool_calls .tool").inner_text() == "get_weather"
    (recorded_call,) = detail["threads"][0]["tool_calls"]
    assert page.locator("li.tool_calls pre.input").inner_text() == recorded_call["input"]
    assert f"{detail['total_tokens']:,} tokens" in page.locator("section.thread h2").inner_text()
    facts = page.locator("dl.facts").inner_text()
    assert "alice" in facts and f"{detail['total_tokens']:,}" in facts
    screenshot(page, tmp_path, "session-detail.png")


def test_a_prompt_is_shown_as_text_never_run(bridge: Bridge, traffic: Traffic, context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, bridge, traffic.tokens["alice"], f"/aibridge/sessions/{traffic.alice_chat}")
    assert page.url.endswith(f"/aibridge/sessions/{traffic.alice_chat}"), "back to the page first asked for"
    assert page.title() != "owned"
    assert page.locator("li.prompt script, li.prompt b").count() == 0
    assert "&lt;script&gt;" in page.content()


def test_a_member_sees_only_their_own_sessions(bridge: Bridge, traffic: Traffic, context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, bridge, traffic.tokens["alice"])
    assert sorted(session_ids_on(page)) == sorted([traffic.alice_chat, traffic.alice_claude])
    response = page.goto(f"{bridge.url}/aibridge/sessions/{traffic.bob_chat}")
    assert response is not None and response.status == 404
    assert "Not found" in page.locator("h1").inner_text()
    assert "Sunny" not in page.content() and "Paris" not in page.content()
    page.goto(f"{bridge.url}/aibridge/sessions?initiator=bob")
    assert page.locator("p.error").inner_text().startswith("initiator:bob is not you")


def test_the_cookie_is_http_only_strict_and_never_in_the_page(
    bridge: Bridge, traffic: Traffic, context: BrowserContext
) -> None:
    page = context.new_page()
    token = traffic.tokens["alice"]
    sign_in(page, bridge, token)
    (cookie,) = context.cookies()
    assert cookie["name"] == "aibridge_session"
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/aibridge"
    assert cookie["secure"] is False, "served over plain http here; Secure when over https"
    assert cookie["expires"] <= jwt.decode(token, options={"verify_signature": False})["exp"] + 1
    assert page.evaluate("document.cookie") == "", "scripts in the page cannot read it"
    assert token not in page.content()


def test_sign_out_forgets_the_sign_in(bridge: Bridge, traffic: Traffic, context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, bridge, traffic.tokens["bob"])
    assert "bob" in page.locator("form.who").inner_text()
    page.click("form.who button")
    page.wait_for_load_state()
    assert "/aibridge/login" in page.url and context.cookies() == []
    page.goto(f"{bridge.url}/aibridge/sessions/{traffic.bob_chat}")
    assert "/aibridge/login" in page.url


def test_a_bad_token_is_refused_on_the_form(bridge: Bridge, traffic: Traffic, context: BrowserContext) -> None:
    page = context.new_page()
    page.goto(f"{bridge.url}/aibridge/login")
    page.fill("#token", "not-a-token")
    with page.expect_response(f"{bridge.url}/aibridge/login") as answer:
        page.click("button[type=submit]")
    assert answer.value.status == 401
    assert page.locator("p.error").inner_text().startswith("Not signed in:")
    assert context.cookies() == []


def test_the_keyboard_moves_through_sessions(bridge: Bridge, traffic: Traffic, context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, bridge, traffic.tokens["alice"])
    first = session_ids_on(page)[0]
    page.keyboard.press("j")
    assert page.evaluate("document.activeElement.innerText") == first
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.endswith(f"/aibridge/sessions/{first}")


def test_a_form_posted_from_another_site_is_refused(bridge: Bridge, traffic: Traffic) -> None:
    answer = httpx.post(
        f"{bridge.url}/aibridge/login",
        data={"token": traffic.tokens["alice"]},
        headers={"Origin": "http://evil.example"},
    )
    assert answer.status_code == 403 and "set-cookie" not in answer.headers


def test_reading_the_pages_is_audited(bridge: Bridge, traffic: Traffic, context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, bridge, traffic.tokens["admin"], f"/aibridge/sessions/{traffic.alice_claude}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("session.page by root (admin)" in line for line in bridge.output):
        time.sleep(0.1)
    assert any("session.page by root (admin)" in line for line in bridge.output)
    assert any("sessions.page by" in line for line in bridge.output)
