#!/usr/bin/env bash
# NAB scoring of the shipped detectors through `prismwatch detect`, plus an ablation (each
# detector alone, then the fusion). Usage: benches/nab.sh [NAB_DIR] [OUT_DIR]
# NAB_DIR defaults to ../shared/nab (data/, labels.json, nab_score.py).
set -euo pipefail
cd "$(dirname "$0")/.."
nab=${1:-../shared/nab}
out=${2:-target/nab}
cargo build --release --locked --quiet
bin=target/release/prismwatch
score() { python3 "$nab/nab_score.py" --data "$nab/data" --labels "$nab/labels.json" --results "$1" "${@:2}"; }

rm -rf "$out" && mkdir -p "$out"
"$bin" detect --input "$nab/data" --output "$out/fused" 2>/dev/null
echo "## fused anomaly_score, threshold optimised"; score "$out/fused"
echo "## shipped alert column"; score "$out/fused" --column alert --threshold 0.5

echo "## ablation: each detector alone (standard profile: optimised anomaly_score | alert@0.5)"
for d in zscore seasonal trend variance iforest drift art; do
  cfg="$out/only-$d.yaml"
  {
    echo "rules: { paths: [config/rules] }"
    echo "pipeline:"
    echo "  operators:"
    echo "    - dedup: {}"
    echo "    - zscore: {}"
    echo "    - anomaly:"
    echo "        fusion:"
    echo "          weights:"
    for w in zscore seasonal trend variance iforest drift art; do
      if [ "$w" = "$d" ]; then echo "            $w: 1.0"; else echo "            $w: 0.0"; fi
    done
  } > "$cfg"
  "$bin" --config "$cfg" detect --input "$nab/data" --output "$out/only-$d" 2>/dev/null
  opt=$(score "$out/only-$d" | awk '/^standard/ {print $2}')
  alert=$(score "$out/only-$d" --column alert --threshold 0.5 | awk '/^standard/ {print $2}')
  echo "$d: $opt | $alert"
done
opt=$(score "$out/fused" | awk '/^standard/ {print $2}')
alert=$(score "$out/fused" --column alert --threshold 0.5 | awk '/^standard/ {print $2}')
echo "fused (default): $opt | $alert"
