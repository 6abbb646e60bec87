"""docs/architecture.md names every module of the package, and only modules that exist."""

import re

from brainvlm.core.paths import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "brainvlm"


def documented_modules() -> set[str]:
    text = (PROJECT_ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text.split("## Modules", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z0-9_/]+\.py)` \|", table, flags=re.MULTILINE))


def test_the_module_table_matches_the_package():
    modules = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py")}
    documented = documented_modules()
    assert documented - modules == set(), "documented but missing"
    assert modules - documented == set(), "modules missing from docs/architecture.md"


def test_every_subpackage_says_what_it_holds():
    for init in PACKAGE.rglob("__init__.py"):
        assert init.read_text(encoding="utf-8").startswith('"""'), f"{init} has no docstring"
