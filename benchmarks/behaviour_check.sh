#!/usr/bin/env bash
# Behaviour check for refactors: run the chain, every single-stage command and the demo on the real
# tennis clip (../shared/data/tennis) with the bundled demo weights and write the sha256 of every
# output file.  Run it on the commit before and after a change and diff the two lists:
#   benchmarks/behaviour_check.sh /tmp/before && (checkout the change) && benchmarks/behaviour_check.sh /tmp/after
#   diff /tmp/before.sha /tmp/after.sha
# CPU: about an hour on a 2-core box (the x4 upscale of 70 frames dominates); SKIP_UPSCALE=1 skips
# the standalone upscale (the chain already runs the upscale stage).
set -euo pipefail
OUT=${1:?usage: behaviour_check.sh OUT_DIR}
cd "$(dirname "$0")/.."
T=${PEANUT_SHARED:-../shared}/data/tennis
PY=${PY:-python}
export PEANUT_OFFLINE=1
rm -rf "$OUT" && mkdir -p "$OUT"
$PY infer.py --input "$T/frames" --masks "$T/masks" --output "$OUT/chain" --upscale 4 --interpolate 2 \
  --checkpoint-erase erase_demo --checkpoint-upscale upscale_demo --checkpoint-interpolate interpolate_demo --no-progress
$PY infer.py --input "$T/frames" --masks "$T/masks" --output "$OUT/chain_erase_only" --checkpoint-erase erase_demo --no-progress
$PY infer.py erase --input "$T/frames" --masks "$T/masks" --output "$OUT/erase_official" --checkpoint erase_demo --mode official --no-progress
$PY infer.py erase --input "$T/frames" --masks "$T/masks" --output "$OUT/erase_streaming" --checkpoint erase_demo --mode streaming --no-progress
[ -n "${SKIP_UPSCALE:-}" ] || $PY infer.py upscale --input "$T/frames" --output "$OUT/upscale" --checkpoint upscale_demo
$PY infer.py interpolate --input "$T/frames" --output "$OUT/interp" --checkpoint interpolate_demo --multi 2
$PY infer.py flow --input "$T/frames" --output "$OUT/flow" --checkpoint spynet_demo
$PY infer.py --demo --output "$OUT/demo.mp4" --summary-json "$OUT/demo_summary.json"
(cd "$OUT" && find . -type f \( -name '*.png' -o -name '*.mp4' \) | sort | xargs sha256sum) > "$OUT.sha"
echo "wrote $OUT.sha"
