"""Service start-up rules that need no model: login beyond loopback, the offline page filter."""
import subprocess
import sys

import pytest

from conftest import free_port, write_registry
from deploy.webui.server import parse_auth
from deploy.webui.offline import strip_offsite


def test_webui_beyond_loopback_requires_a_login(tmp_path):
    reg = tmp_path / "model_paths.toml"
    write_registry(reg, [], free_port(), free_port(), free_port())
    reg.write_text(reg.read_text().replace('host = "127.0.0.1"', 'host = "0.0.0.0"'))
    r = subprocess.run([sys.executable, "-m", "deploy", "--registry", str(reg), "webui"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 78
    assert "reachable by anyone on 0.0.0.0 without a login" in r.stderr and "webui_auth_file" in r.stderr


def test_auth_file_parsing(tmp_path):
    f = tmp_path / "auth"
    f.write_text("alice:secret\nbob:p:w\n")
    assert parse_auth(str(f)) == [("alice", "secret"), ("bob", "p:w")]
    f.write_text("alice\n")
    with pytest.raises(ValueError, match="'alice' is not user:password"):
        parse_auth(str(f))


def test_offsite_tags_are_removed_and_local_ones_kept():
    page = """<head><link rel="preconnect" href="https://fonts.googleapis.com" />
    <script
        src="https://cdnjs.cloudflare.com/ajax/libs/iframe-resizer/4.3.1/iframeResizer.contentWindow.min.js"
        async></script>
    <meta property="og:url" content="https://gradio.app/" />
    <script type="module" crossorigin src="./assets/index.js"></script>
    <link rel="stylesheet" href="./assets/index.css"></head>"""
    out = strip_offsite(page)
    assert "https://" not in out
    assert './assets/index.js' in out and './assets/index.css' in out
