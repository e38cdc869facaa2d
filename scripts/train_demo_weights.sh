#!/usr/bin/env bash
# Reproduce the demo weights shipped in peanut_jax/assets/ and the recorded demo metrics:
#
#   scripts/train_demo_weights.sh            # CPU, 2 cores: about an hour each for the eraser and SAMWISE,
#                                            # 15-30 min per other stage
#
# 1. train the tiny configuration of each stage with our own train.py on the procedural synthetic
#    dataset (configs/<model>.py:tiny; deterministic: same seed, same data order); the mask stage is
#    two runs: the tiny text encoder (configs/roberta.py:tiny), then SAMWISE with it frozen
#    (configs/samwise.py:tiny --config.model.init_text=<the text run>);
# 2. export the final checkpoint of each run to peanut_jax/assets/<stage>_demo/
#    (model.json + params.safetensors, peanut_jax.checkpoints.export.export_trained);
# 3. run the demo with the exported weights and record its settings and metrics in
#    peanut_jax/assets/demo_metrics.json (the CI test reruns the demo and compares).
#
# Environment: PYTHON (default: python), RUNS (work directories, default runs/demo_weights; a
# rerun with the same RUNS resumes/keeps finished runs), JAX_PLATFORMS (default cpu).
# Extra arguments are passed to every train.py call (e.g. --config.train.num_steps=500).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
RUNS=${RUNS:-runs/demo_weights}
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
mkdir -p "$RUNS"

for pair in "erase e2fgvi" "upscale basicvsr_pp" "interpolate rife"; do
  read -r stage model <<<"$pair"
  echo "== $stage: train.py --config configs/$model.py:tiny"
  "$PY" train.py --config "configs/$model.py:tiny" --workdir "$RUNS/$model" "$@"
  "$PY" -m peanut_jax.cli.demo export --workdir "$RUNS/$model" --out "peanut_jax/assets/${stage}_demo"
done

echo "== mask: train.py --config configs/roberta.py:tiny, then configs/samwise.py:tiny"
"$PY" train.py --config configs/roberta.py:tiny --workdir "$RUNS/roberta" "$@"
"$PY" train.py --config configs/samwise.py:tiny --workdir "$RUNS/samwise" --config.model.init_text="$RUNS/roberta" "$@"
"$PY" -m peanut_jax.cli.demo export --workdir "$RUNS/samwise" --out peanut_jax/assets/mask_demo

echo "== recording the demo metrics"
"$PY" -m peanut_jax.cli.demo record
du -sh peanut_jax/assets/*_demo
