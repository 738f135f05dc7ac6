"""The README is the contract a new user follows."""
from conftest import REPO

# The field table is in docs/configuration.md; tests/test_docs.py checks it.


def test_ci_runs_the_readme_test_command():
    ci = [l.strip() for l in (REPO / ".ci/run").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert "scripts/test.sh" in ci
    assert "scripts/test.sh      # run the tests" in (REPO / "README.md").read_text()


def test_ask_all_runs_as_a_script_and_as_a_module_from_any_folder(tmp_path):
    import subprocess
    import sys

    for cmd in ([sys.executable, str(REPO / "eval/ask_all.py"), "--help"], [sys.executable, "-m", "eval.ask_all", "--help"]):
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0 and "--resume" in r.stdout, r.stderr
