"""The README is the contract a new user follows."""
from conftest import REPO
from deploy.config import fields_markdown


def test_readme_documents_every_registry_field():
    assert fields_markdown() in (REPO / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    ci = [l.strip() for l in (REPO / ".ci/run").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert "scripts/test.sh" in ci
    assert "scripts/test.sh      # run all the tests" in (REPO / "README.md").read_text()
