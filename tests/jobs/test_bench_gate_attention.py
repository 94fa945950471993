"""The gate-attention bench: the runner's key-channel form carries the attention gate's bias and gradient exactly as the math form."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "jobs"))


def test_the_key_channel_form_gives_the_math_forms_gradient(capsys, one_thread):
    import bench_gate_attention

    bench_gate_attention.main(["--batch", "2", "--heads", "2", "--length", "40", "--visual", "24",
                               "--head-dim", "8", "--repeats", "1"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["form"].split(",")[0] for r in rows] == ["math (float mask with grad)", "flash"]
    assert rows[0]["max_abs_grad_diff"] == 0.0 and rows[0]["max_abs_grad"] > 0
    for r in rows[1:]:
        assert r["max_abs_grad_diff"] < 1e-4 * rows[0]["max_abs_grad"] + 1e-6, r
