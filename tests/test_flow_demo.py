"""The README's first command: the bundled SPyNet demo weights load, reproduce the recorded EPE on
the procedural demo clip and beat the zero-flow baseline; the flow CLI refuses bad input."""

import json

from peanut_jax.pipeline.common import bundled_asset
from peanut_jax.pipeline.flow import run_flow

RECORDED_EPE = 1.164  # `infer.py flow --demo` with peanut_jax/assets/spynet_demo (300 training steps)


def test_demo_weights_reproduce_recorded_epe(tmp_path):
    meta = json.loads((bundled_asset("spynet_demo") / "model.json").read_text())
    assert meta["model"] == "spynet" and meta["metadata"]["trained_steps"] > 0
    s = run_flow(None, tmp_path / "demo.mp4", demo=True, progress=False)
    assert (tmp_path / "demo.mp4").stat().st_size > 0
    assert s["pairs"] == 15
    assert abs(s["epe"] - RECORDED_EPE) < 0.01
    assert s["epe"] < s["epe_zero_flow"]


def test_flow_cli_errors(tmp_path, capsys):
    import infer

    assert (
        infer.main(
            [
                "flow",
                "--input",
                str(tmp_path / "missing.mp4"),
                "--output",
                str(tmp_path / "o.mp4"),
                "--checkpoint",
                str(bundled_asset("spynet_demo")),
            ]
        )
        == 2
    )
    assert "missing.mp4" in capsys.readouterr().err
    (tmp_path / "o.mp4").write_bytes(b"x")
    assert infer.main(["flow", "--demo", "--output", str(tmp_path / "o.mp4")]) == 2
    assert (tmp_path / "o.mp4").read_bytes() == b"x"  # refused, untouched
    assert "exists" in capsys.readouterr().err.lower()
