"""The layering in docs/architecture.md, enforced: import-linter's contracts (pyproject.toml) must hold.

Run through the suite so `.ci/run` (which runs the README's test command) checks them on every
change; `lint-imports` alone gives the same report while working.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_layer_imports_only_downward_and_the_core_stays_pure() -> None:
    # Given the contracts in pyproject.toml
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    # When import-linter checks the package
    result = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    # Then every contract is kept
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_no_product_module_is_longer_than_400_lines_nor_an_emulator_module_than_700() -> None:
    package = ROOT / "sync"
    too_long = []
    for path in package.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        limit = 700 if "testing" in path.relative_to(package).parts else 400
        lines = len(path.read_text().splitlines())
        if lines > limit:
            too_long.append(f"{path.relative_to(ROOT)}: {lines} > {limit}")
    assert not too_long, "\n".join(too_long)
