"""A browser on another origin calls the chat route with `fetch` and reads the answer (CORS on the fast route)."""

from __future__ import annotations

import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_serving_app_support import chat_body, free_port, start_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PAGE = """<!doctype html><html><body><pre id="out">waiting</pre><script>
fetch("SERVER/v1/chat/completions", {method: "POST",
  headers: {"Content-Type": "application/json", "Authorization": "Bearer TOKEN"}, body: JSON.stringify(BODY)})
  .then(r => r.json().then(j => ({status: r.status, id: r.headers.get("x-request-id"), j})))
  .then(({status, id, j}) => { document.getElementById("out").textContent =
      JSON.stringify({status, id, content: j.choices[0].message.content}); })
  .catch(e => { document.getElementById("out").textContent = "error: " + e; });
</script></body></html>"""


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_page_on_another_origin_reads_the_chat_answer(tmp_path: Path):
    import json

    from playwright.sync_api import sync_playwright

    page_port = free_port()
    origin = f"http://127.0.0.1:{page_port}"
    srv = start_server(tmp_path / "server", serving={"cors_origins": origin})
    site = tmp_path / "site"
    site.mkdir()
    html = (
        PAGE.replace("SERVER", srv.base_url)
        .replace("TOKEN", srv.token())
        .replace("BODY", json.dumps(chat_body()))
    )
    (site / "index.html").write_text(html)
    httpd = ThreadingHTTPServer(
        ("127.0.0.1", page_port), partial(SimpleHTTPRequestHandler, directory=str(site))
    )
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(f"{origin}/index.html")
            page.wait_for_function("document.getElementById('out').textContent !== 'waiting'", timeout=30_000)
            text = page.text_content("#out")
            page.screenshot(path=str(tmp_path / "cors.png"))
            browser.close()
        assert not text.startswith("error"), f"the browser could not read the answer: {text}"
        result = json.loads(text)
        assert result["status"] == 200 and result["content"] == "echo: Where is my card?"
        assert result["id"], "x-request-id is exposed to the page"
        assert len(srv.wait_records([result["id"]])[result["id"]]) == 1
    finally:
        httpd.shutdown()
        srv.stop()
