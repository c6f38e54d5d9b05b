#!/usr/bin/env bash
# Issue 9's H200 check, one command on the device machine (under 10 minutes): this engine (online teacher,
# cached top-k) against TRL 1.16's GKDTrainer (lmbda 0, beta 0) on random-init Qwen2 shapes, student 0.5B
# (hidden 896, 24 layers, vocabulary 151,936, tied) from a 1.5B teacher (hidden 1536, 28 layers), bf16
# autocast, sdpa, batch 8 x (256 prompt + 768 response) tokens; tokens/s and torch.cuda.max_memory_allocated.
#
# Prepare here once (the machine has torch 2.11, transformers 5.17, accelerate, pandas; no package index):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 xxhash==4.1.0 "pyarrow>=24" \
#     pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
# Then, through the device tool (carry [".whl"], timeout_s 600; BENCH_TIMEOUT=<s> shortens the bench's limit):
#   bash benchmarks/gpu_check_issue9.sh
# Tested on CPU with --arch qwen2-tiny (the same code path, tiny shapes).
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
# the bench looks for TRL in .bench-site: point it at the installed wheels
ln -sfn /tmp/site .bench-site
timeout "${BENCH_TIMEOUT:-540}" python3 benchmarks/bench_distill.py --arch qwen2-0.5b-1.5b --device cuda --batch-size 8 \
  --prompt-len 256 --response-len 768 --steps 6 --k 32 --threads 16 --work /tmp/bench-distill 2>&1 | tee "$OUT/bench_distill.log"
