"""The release's identity, defined once and kept true: the version, the JSON contract it speaks, the CHANGELOG's
newest release, the package metadata and the links that leave the repository.

The rule these tests hold: every change of the JSON contract is a new version (a host CLI and a provider of one
version always speak one contract), so the newest release heading in CHANGELOG.md names both, and a contract bump
without a release heading fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import orchesjob
from orchesjob.contract import CONTRACT_VERSION

REPO = Path(__file__).resolve().parents[2]
RELEASE = re.compile(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d\d-\d\d)(?: - JSON contract (\d+))?$", re.M)


def releases() -> list[tuple[str, str, int | None]]:
    text = (REPO / "CHANGELOG.md").read_text()
    return [(v, d, int(c) if c else None) for v, d, c in RELEASE.findall(text)]


def pyproject() -> dict:
    import tomllib  # type: ignore[import-not-found,unused-ignore]  # Python 3.11+, the main suite's interpreter

    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_newest_release_is_this_version_and_names_its_contract() -> None:
    newest = releases()[0]
    assert newest[0] == orchesjob.__version__, "CHANGELOG's newest release is not orchesjob.__version__"
    assert newest[2] == CONTRACT_VERSION, (
        "the JSON contract changed without a release that names it: add a CHANGELOG release heading "
        "'## [X.Y.Z] - DATE - JSON contract %d' and set orchesjob.__version__ to X.Y.Z" % CONTRACT_VERSION
    )


def test_release_versions_and_dates_only_grow() -> None:
    found = releases()
    assert len(found) >= 2
    versions = [tuple(int(p) for p in v.split(".")) for v, _, _ in found]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions)
    dates = [d for _, d, _ in found]
    assert dates == sorted(dates, reverse=True)
    # this project's first build (0.1.0, contract 1) was released before contracts were named in headings
    contracts = [c for _, _, c in found if c is not None]
    assert contracts == sorted(contracts, reverse=True)


def test_a_version_above_the_program_it_replaces() -> None:
    """orchesjob 1.1.0 is on the index: pip must rank this project above it, or `pip install -U orchesjob` on a
    host of ours installs 1.1.0, which cannot read the upgraded database."""
    assert tuple(int(p) for p in orchesjob.__version__.split(".")) >= (2, 0, 0)


def test_metadata_links_and_python_versions_agree() -> None:
    from orchesjob.cli import MIN_PYTHON
    from orchesjob_provider import get_provider_info

    project = pyproject()["project"]
    urls = project["urls"]
    assert all(u.startswith("https://") for u in urls.values())
    # the provider's page in Airflow links to the same docs as the index page
    docs = urls["Documentation"]
    assert [i["external-doc-url"] for i in get_provider_info()["integrations"]] == [docs]
    assert project["requires-python"] == ">=%d.%d" % MIN_PYTHON
    pythons = sorted(
        tuple(int(p) for p in c.rsplit(" ", 1)[1].split("."))
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    assert pythons[0] == MIN_PYTHON
    assert any(c.startswith("Development Status :: ") for c in project["classifiers"])


def test_the_readme_is_a_front_door_whose_links_work_on_an_index_page() -> None:
    """README.md is also the package's long description: on an index page a relative link breaks, so every link is
    absolute; links into the docs site name pages that exist in docs/."""
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert links, "the README links to its docs"
    relative = [link for link in links if not link.startswith("https://")]
    assert relative == [], "relative links break on an index page: %s" % relative
    docs = pyproject()["project"]["urls"]["Documentation"]
    source = pyproject()["project"]["urls"]["Source"] + "/blob/main/"
    for link in links:
        if link.startswith(docs):
            page = link[len(docs) :].split("#")[0].strip("/")
            assert (REPO / "docs" / (page + ".md" if page else "index.md")).is_file(), link
        elif link.startswith(source):
            assert (REPO / link[len(source) :].split("#")[0]).exists(), link


def test_the_docs_site_is_this_projects() -> None:
    import yaml  # type: ignore[import-untyped,unused-ignore]  # (PyYAML comes with MkDocs)

    site = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    assert site["site_url"] == pyproject()["project"]["urls"]["Documentation"]
    assert site["strict"] is True


def test_the_performance_charts_are_drawn_from_the_committed_figures() -> None:
    """The charts on the performance page are the benches' JSON drawn by bench/charts.py: a figure file changed
    without redrawing (python bench/charts.py) fails here."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_charts", REPO / "bench" / "charts.py")
    assert spec is not None and spec.loader is not None
    charts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(charts)
    page = (REPO / "docs" / "performance.md").read_text()
    for name in charts.CHARTS:
        assert (REPO / "docs" / "img" / name).read_text() == charts.render(name), name
        assert "img/%s" % name in page, "the performance page does not show %s" % name


def test_the_cli_reference_page_is_generated_from_the_argument_table() -> None:
    """docs/cli-reference.md is what the parser's own table says (python tools/cli_reference.py rewrites it), and the
    guide (docs/cli.md) names every option of every command it describes."""
    from orchesjob.arguments import COMMANDS
    from orchesjob.manual import reference_markdown

    assert (REPO / "docs" / "cli-reference.md").read_text() == reference_markdown(), "run python tools/cli_reference.py"
    guide = (REPO / "docs" / "cli.md").read_text()
    common = guide.split("### At a terminal", 1)[1].split("\n### ", 1)[0]
    assert "--format" in common  # one spelling for every command with a view, explained once
    pages = guide + (REPO / "docs" / "operations.md").read_text()
    described = 0
    for name, (_, spec, _) in COMMANDS.items():
        heading = next((h for h in ("### `%s`" % name, "## `%s`" % name) if h in pages), None)
        if heading is None:
            continue
        described += 1
        section = pages.split(heading, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
        missing = [flag for flag in spec if flag != "--format" and flag not in section]
        assert missing == [], "the guide's %s section does not mention %s" % (name, missing)
    assert described >= 10


def test_the_job_object_table_names_every_field_of_a_real_answer(tmp_path: Path) -> None:
    """docs/cli.md's table of the job object against what `status` really prints for a finished job."""
    from tests.support.cli import check_ok, run_cli

    job = check_ok(run_cli(tmp_path / "home", "start", "--sync", "--run-key", "doc", "--", "true"))
    fields = check_ok(run_cli(tmp_path / "home", "status", "--job-id", job["job_id"])).keys()
    guide = (REPO / "docs" / "cli.md").read_text()
    table = guide.split("## The job object", 1)[1].split("\n## ", 1)[0]
    iso = "(+ `_iso`)" in table  # `started_at` ... (+ `_iso`): each timestamp also as ISO 8601
    missing = sorted(
        f for f in fields if "`%s`" % f not in table and not (iso and f.endswith("_iso") and "`%s`" % f[:-4] in table)
    )
    assert missing == [], "docs/cli.md's job object table lacks %s" % missing


def test_the_module_map_names_every_module() -> None:
    """docs/development.md's map of the code lists every module of both packages, so a reader finds where a thing
    happens from it; a module added without a line there fails here."""
    page = (REPO / "docs" / "development.md").read_text()
    block = page.split("```", 2)[1]
    missing = []
    for package in ("orchesjob", "orchesjob_provider"):
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO / package).as_posix()
            if path.name == "__init__.py" and path.parent.name != package:
                continue  # operators/, sensors/... are listed as folders
            if rel not in block and path.name not in block:
                missing.append("%s/%s" % (package, rel))
    assert missing == [], "docs/development.md's module map lacks %s" % missing
