#!/usr/bin/env bash
# The fraud template (default preset) and the code template (tiny preset) with an `openai` teacher: the
# embedded SmolLM2 GGUF served by llama-cpp-python's OpenAI-compatible server on 127.0.0.1, reached over
# HTTP like DeepSeek's API or a vLLM server would be. Each project runs twice: the second run must make
# zero teacher calls (printed). Usage: benchmarks/api_teacher_demo.sh [runs-folder]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs}
BIN=${BIN:-.venv/bin}
PORT=${PORT:-8765}
BASE=http://127.0.0.1:$PORT/v1
GGUF=$($BIN/python -c "from sdk.models import _embedded_gguf; print(_embedded_gguf('embedded:smollm2-135m-instruct'))")

# the server gets one core's worth of threads: the pipeline runs beside it on this 2-core machine
OMP_WAIT_POLICY=PASSIVE $BIN/python -m llama_cpp.server --model "$GGUF" --host 127.0.0.1 --port "$PORT" \
    --n_ctx 2048 --n_threads 1 --logits_all true --model_alias smollm2 > "$OUT/llama-server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 120); do curl -sf "$BASE/models" > /dev/null && break; sleep 1; done

for spec in "fraud default fraud-api" "code tiny code-api"; do
    set -- $spec
    $BIN/distill init "$1" "$OUT/$3" --preset "$2" --force --teacher openai --base-url "$BASE" --model smollm2
    $BIN/distill annotate "$OUT/$3/project.yaml" --out "$OUT/$3" --dry-run
    /usr/bin/time -f "$3 first run: %e s" $BIN/distill run "$OUT/$3/project.yaml" --out "$OUT/$3"
    /usr/bin/time -f "$3 second run: %e s" $BIN/distill run "$OUT/$3/project.yaml" --out "$OUT/$3"
done
