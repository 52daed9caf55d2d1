"""Rules of the source tree that a reviewer would otherwise check by hand: functions of at
most 80 lines, and one owner (training/modeldir.py) of the files in RUN/models/<ref>/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import ROOT

SRC = ROOT / "src" / "ensemble_dfd"
MAX_LINES = 80
MODEL_FILES = re.compile(r"done\.json|model\.keras|checkpoint\.keras|history\.csv|state\.json"
                         r"|params\.json|model\.onnx|curves\.png")


def _functions(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            yield node.name, start, node.end_lineno - start + 1


def test_every_function_is_at_most_80_lines():
    long = [f"{p.relative_to(ROOT)}:{line} {name} ({n} lines)"
            for p in sorted(SRC.rglob("*.py")) for name, line, n in _functions(p)
            if n > MAX_LINES]
    assert not long, long


def test_only_modeldir_names_the_files_of_a_model_folder():
    owner = SRC / "training" / "modeldir.py"
    assert MODEL_FILES.search(owner.read_text())
    spelled = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
               for p in sorted(SRC.rglob("*.py")) if p != owner
               for i, line in enumerate(p.read_text().splitlines(), 1)
               if MODEL_FILES.search(line)]
    assert not spelled, spelled
