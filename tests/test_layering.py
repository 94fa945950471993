"""Imports flow one way, jobs -> pipeline -> stepprune; the library never pulls in Ray, DeepSpeed or MLflow."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_LIBRARY = ("ray", "deepspeed", "mlflow", "pipeline", "jobs", "omegaconf")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_library_source_imports_no_orchestration_package():
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & set(FORBIDDEN_IN_LIBRARY))
                 for p in (ROOT / "stepprune").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_stepprune_loads_no_ray_deepspeed_or_mlflow():
    code = "import stepprune, stepprune.methods, sys; print([m for m in ('ray','deepspeed','mlflow') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_pipeline_defines_no_modules_and_never_imports_jobs():
    for p in (ROOT / "pipeline").rglob("*.py"):
        assert "jobs" not in _imports(p), p
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b) for b in node.bases}
                assert not bases & {"nn.Module", "torch.nn.Module", "Module"}, f"{p}: {node.name}"
