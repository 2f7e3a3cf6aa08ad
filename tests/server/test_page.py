"""The chat page (GET /) in a real browser: headless Chromium from Debian
(scripts/install-deps installs chromium and chromium-driver) driven by
Selenium. A prompt is typed and sent, the reply must stream in (shown
piece by piece while the request is still running) and end non-empty;
"New chat" in the middle of a reply must stop it and free the server's
slot. A screenshot of the page is saved to build/test-artifacts/ whether
the test passes or not."""
import os
import shutil
import time

import pytest

from .util import MODEL_ID, ROOT

ARTIFACTS = ROOT / "build" / "test-artifacts"  # build/ is ignored by git
REPLY_TIMEOUT = 120  # seconds for a whole reply (the page sends no max_tokens)

# Installed on the window before sending: records every change of the last
# assistant bubble as [ms since send, text length, request still running].
RECORDER = """
if (window.__recorder) window.__recorder.disconnect();
window.__changes = [];
const t0 = performance.now();
window.__recorder = new MutationObserver(() => {
  const bubbles = document.querySelectorAll('#log .assistant');
  if (!bubbles.length) return;
  window.__changes.push([performance.now() - t0, bubbles[bubbles.length - 1].textContent.length,
                         document.getElementById('send').disabled]);
});
window.__recorder.observe(document.getElementById('log'), { childList: true, subtree: true, characterData: true });
"""
SCREENSHOTS = {"test_chat_page_streams_a_reply": "chat-page.png"}  # others: chat-page-TEST.png


def _chrome_paths():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("chromium or chromedriver missing: run scripts/install-deps")
    return browser, driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: run scripts/setup-venv")
    from selenium.webdriver.chrome.service import Service
    path, driver_path = _chrome_paths()
    opts = webdriver.ChromeOptions()
    # --no-sandbox: containers and root; --disable-dev-shm-usage: a small /dev/shm
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1024,900", "--no-first-run"):
        opts.add_argument(a)
    # profile and TMPDIR (Chromium leaves a socket directory there) in pytest's tmp
    tmp = tmp_path_factory.mktemp("chromium")
    opts.add_argument(f"--user-data-dir={tmp / 'profile'}")
    opts.binary_location = path  # both paths given: Selenium Manager (network) is not used
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(options=opts, service=Service(driver_path, env={**os.environ, "TMPDIR": str(tmp)}))
    d.set_page_load_timeout(30)
    d.set_script_timeout(30)
    yield d
    d.quit()


@pytest.fixture
def page(browser, server, request):
    """The chat page freshly loaded; a screenshot at the end, pass or fail."""
    from selenium.webdriver.support.ui import WebDriverWait
    browser.get(server.url + "/")
    # the model name arrives from GET /v1/models
    WebDriverWait(browser, 10).until(lambda d: d.find_element("id", "model").text)
    yield browser
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = request.node.name
    browser.save_screenshot(str(ARTIFACTS / SCREENSHOTS.get(name, f"chat-page-{name[5:]}.png")))


def _send_and_wait(d, text, press_enter):
    """Types text, sends it (Enter or the button), waits for the end of the
    reply (the button is disabled while a reply streams); returns the
    recorded changes and the reply's bubble."""
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    d.execute_script(RECORDER)
    box = d.find_element("id", "box")
    box.send_keys(text)
    if press_enter:
        box.send_keys(Keys.ENTER)
    else:
        d.find_element("id", "send").click()
    WebDriverWait(d, 10).until(lambda d: d.execute_script("return window.__changes.length > 0"))
    WebDriverWait(d, REPLY_TIMEOUT, poll_frequency=0.1).until(
        lambda d: d.find_element("id", "send").is_enabled())
    changes = d.execute_script("return window.__changes")
    bubbles = d.find_elements("css selector", "#log .assistant")
    return changes, bubbles[-1]


def _check_streamed(d, changes, bubble):
    assert "error" not in bubble.get_attribute("class"), bubble.text
    reply = bubble.get_attribute("textContent")
    assert reply.strip(), "empty reply"
    lengths = [n for _, n, _ in changes]
    assert lengths == sorted(lengths), f"the reply shrank while streaming: {lengths}"
    # streamed: the text on the page grew in several steps while the
    # request was running, not all at once at the end
    running = [(t, n) for t, n, busy in changes if busy and n > 0]
    assert running, f"no text shown while the reply was running: {changes}"
    grew = sorted({n for _, n in running})
    assert len(grew) >= 2 or len(reply) <= 4, f"the reply did not grow piece by piece: {changes}"
    assert running[-1][0] > running[0][0] or len(reply) <= 4, changes
    assert lengths[-1] == d.execute_script("return arguments[0].textContent.length", bubble), changes
    return reply


def test_chat_page_streams_a_reply(page, server):
    d = page
    assert d.title == "frugal"
    assert d.find_element("id", "model").text == MODEL_ID
    tokens_before = server.metrics()["frugal_completion_tokens_total"]

    # first turn with Enter, second with the button: the page keeps the
    # conversation and sends all of it
    changes, bubble = _send_and_wait(d, "Write three sentences about the sea.", press_enter=True)
    first = _check_streamed(d, changes, bubble)
    t_first = next(t for t, n, _ in changes if n > 0)
    print(f"first turn: {len(changes)} updates, first text after {t_first:.0f} ms, "
          f"{changes[-1][0]:.0f} ms in all, {len(first)} characters")
    changes, bubble = _send_and_wait(d, "Now one sentence about mountains.", press_enter=False)
    second = _check_streamed(d, changes, bubble)

    messages = d.execute_script("return messages")
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[1]["content"] == first and messages[3]["content"] == second
    assert [b.get_attribute("textContent") for b in d.find_elements("css selector", "#log .user")] == [
        "Write three sentences about the sea.", "Now one sentence about mountains."]
    assert d.switch_to.active_element == d.find_element("id", "box")  # ready for the next message
    assert server.metrics()["frugal_completion_tokens_total"] > tokens_before

    # no JavaScript errors (Chromium asks for /favicon.ico, a 404 here)
    errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]
    assert not errors, errors


def test_new_chat_stops_the_reply(page, server):
    from selenium.webdriver.support.ui import WebDriverWait
    d = page
    d.execute_script(RECORDER)
    d.find_element("id", "box").send_keys("Tell me a long story about a lighthouse keeper.")
    d.find_element("id", "send").click()
    # as soon as the reply is streaming, start a new chat
    WebDriverWait(d, REPLY_TIMEOUT, poll_frequency=0.02).until(
        lambda d: d.execute_script("return window.__changes.some(c => c[1] > 0)"))
    d.find_element("id", "clear").click()
    assert d.find_element("id", "send").is_enabled()
    assert d.find_elements("css selector", "#log .msg") == []
    # the aborted request frees its slot; its text never comes back
    server.wait_idle(timeout=30)
    time.sleep(0.2)
    assert d.execute_script("return messages") == []
    assert d.find_elements("css selector", "#log .msg") == []

    # and the new conversation works
    changes, bubble = _send_and_wait(d, "Say hello.", press_enter=True)
    _check_streamed(d, changes, bubble)
    assert [m["role"] for m in d.execute_script("return messages")] == ["user", "assistant"]
