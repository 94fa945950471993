"""The benchmark registry, the module interface, and an end-to-end pass over every fixture."""

import ast
from pathlib import Path

import pytest

import stepprune.benchmarks as benchmarks
from stepprune.benchmarks import BENCHMARKS, UnknownBenchmarkError, get_benchmark

EXPECTED = ["gqa", "mmbench_en", "mmbench_cn", "mme", "pope", "scienceqa", "vqav2", "textvqa"]


def test_registry_names_and_interface():
    assert [n for n in BENCHMARKS if not n.startswith("synthvqa")] == EXPECTED
    for name, module in BENCHMARKS.items():
        assert module.NAME == name and isinstance(module.HEADLINE, str)
        for fn in ("load", "score_one", "aggregate", "details"):
            assert callable(getattr(module, fn)), (name, fn)
        assert module.__doc__ and "layout" in module.__doc__.lower()


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(UnknownBenchmarkError) as err:
        get_benchmark("mmbench")
    assert isinstance(err.value, KeyError)
    assert "mmbench_en" in str(err.value) and "textvqa" in str(err.value)


def _perfect(name, item):
    if name in ("vqav2", "textvqa"):
        return max(set(item.answer), key=item.answer.count)
    return item.answer


@pytest.mark.parametrize("name", EXPECTED)
def test_perfect_predictions_reach_the_maximum(folders, name):
    module = get_benchmark(name)
    items = module.load(folders[name])
    maximum = 2800.0 if name == "mme" else 100.0
    out = module.aggregate(items, [_perfect(name, it) for it in items], flavour="lmms")
    assert out[module.HEADLINE] == pytest.approx(maximum)
    assert all(isinstance(v, float) for v in out.values())
    assert all(module.score_one(_perfect(name, it), it, "lmms") == pytest.approx(1.0) for it in items)


def test_library_never_imports_orchestration_packages():
    forbidden = {"ray", "deepspeed", "mlflow"}
    for path in Path(benchmarks.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not {n.split(".")[0] for n in names} & forbidden, path.name
