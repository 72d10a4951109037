"""The docs cannot go stale: the command-line guide against the parser, the README against its targets."""
import argparse
import re

from conftest import ROOT

from core.cli import build_parser

CLI_GUIDE = ROOT / "docs" / "cli.md"


def parser_options() -> dict[str, set[str]]:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {o for a in sub._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
            for name, sub in commands.choices.items()}


def guide_options() -> dict[str, set[str]]:
    sections = re.split(r"^## `([a-z-]+)`$", CLI_GUIDE.read_text(), flags=re.MULTILINE)[1:]
    return {name: set(re.findall(r"^\| `(--[a-z-]+)", body, flags=re.MULTILINE))
            for name, body in zip(sections[::2], sections[1::2])}


def test_the_command_line_guide_lists_every_command_and_option_and_no_other():
    assert guide_options() == parser_options()


def test_every_option_has_a_help_line():
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {a.option_strings or a.dest}" for name, sub in commands.choices.items()
               for a in sub._actions if not a.help]
    assert not missing


def test_the_readme_is_a_newcomers_page_whose_links_exist():
    text = (ROOT / "README.md").read_text()
    assert len(text) <= 15_000 and max(map(len, text.splitlines())) <= 300
    links = re.findall(r"\]\(([^)#]+)\)", text) + re.findall(r'src="([^"]+)"', text)
    assert links and all((ROOT / link).exists() for link in links if not link.startswith("http")), links
    # The two set-up commands, and CI calling exactly the second.
    assert "python3 -m pip install -r requirements.txt && python3 -m streamlit run streamlit_app.py" in text
    assert "bash scripts/test.sh" in text and "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
