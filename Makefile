# dermcam: `make run` brings the whole stack up locally; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-stamp
REQUIREMENTS := requirements-dev.txt requirements-onnx2tf.txt functions/predict/requirements.txt functions/gradcam/requirements.txt

.PHONY: venv runtime beam torch test test-numerics fixtures scope-benchmark lint run demo demo-metadata bench soak zoo \
	zoo-onnx rollout deploy-local fitcheck browser deploy clean

venv: $(STAMP)

# The virtualenv is rebuilt whenever a requirements file changes. The project's own
# packages (shared/dermcam, model_store, harness, devstack, bench) are put on the path by a
# .pth file.
$(STAMP): $(REQUIREMENTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-onnx2tf.txt
	printf '%s\n' "$(CURDIR)/shared" "$(CURDIR)" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/dermcam-dev.pth"
	touch $@

# The functions' runtime alone (no TensorFlow, no test tools), as Cloud Functions installs
# it: benchmarks and fit checks measure the servers in this one.
RUNTIME_VENV := .venv-runtime
RUNTIME_STAMP := $(RUNTIME_VENV)/.deps-stamp
runtime: $(RUNTIME_STAMP)
$(RUNTIME_STAMP): functions/predict/requirements.txt functions/gradcam/requirements.txt
	test -x $(RUNTIME_VENV)/bin/python || $(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/pip install --quiet --disable-pip-version-check -r functions/predict/requirements.txt -r functions/gradcam/requirements.txt
	printf '%s\n' "$(CURDIR)/shared" > "$$($(RUNTIME_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/dermcam.pth"
	touch $@

# The Beam pipeline's own environment (model_store/archive: whole archives on the direct runner
# or Dataflow): apart from .venv because Beam pins Pillow below the functions' 13.
BEAM_VENV := .venv-beam
BEAM_STAMP := $(BEAM_VENV)/.deps-stamp
beam: $(BEAM_STAMP)
$(BEAM_STAMP): model_store/archive/requirements.txt
	test -x $(BEAM_VENV)/bin/python || $(PYTHON) -m venv $(BEAM_VENV)
	$(BEAM_VENV)/bin/pip install --quiet --disable-pip-version-check -r model_store/archive/requirements.txt
	printf '%s\n' "$(CURDIR)/shared" "$(CURDIR)" > "$$($(BEAM_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/dermcam.pth"
	touch $@

# PyTorch (torch, torchvision, timm, pytorch-grad-cam; several GB) for make zoo-onnx and for
# regenerating tests/fixtures/onnx; never part of make test, never beside TensorFlow.
TORCH_VENV := .venv-torch
TORCH_STAMP := $(TORCH_VENV)/.deps-stamp
torch: $(TORCH_STAMP)
$(TORCH_STAMP): requirements-torch.txt
	test -x $(TORCH_VENV)/bin/python || $(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-torch.txt
	printf '%s\n' "$(CURDIR)" > "$$($(TORCH_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/dermcam.pth"
	touch $@

# Every model × function × engine × memory tier; writes bench/results.md (about 30 minutes).
bench: venv runtime
	$(PY) -m bench.run $(ARGS)

# Each function at its deployed configuration answers 5,000 requests; memory slope, OOM kills.
soak: venv runtime
	$(PY) -m bench.soak $(ARGS)

# Every keras.applications family through the exporter, nested and flat; docs/MODELS.md
# (hours: each export in its own process; reruns skip what bench/out/zoo.json holds).
zoo: venv runtime
	$(PY) -m bench.zoo $(ARGS)

# PyTorch families (timm, torchvision) through ONNX, each map against pytorch-grad-cam's;
# docs/MODELS.md (an hour or so; reruns skip what bench/out/zoo_onnx.json holds).
zoo-onnx: venv runtime torch
	$(PY) -m bench.zoo_onnx $(ARGS)

# Attention rollout and gradient-weighted rollout beside Grad-CAM on small ViTs trained on
# isic-uda1 (deletion, insertion, sanity, served cost); docs/EXPLANATIONS.md (~15 minutes).
rollout: venv runtime torch
	$(PY) -m bench.rollout $(ARGS)

# make fitcheck MODEL=model_store/models/mymodel/1 (or MODEL=ham10000, MODEL=demo-metadata)
fitcheck: venv runtime
	dir=$$($(PY) -m model_store.catalog $(or $(MODEL),demo)) && $(PY) -m model_store.fitcheck "$$dir" $(ARGS)

lint: venv
	$(VENV)/bin/ruff check .

# The browser tests drive Debian's Chromium (Playwright cannot download its own here); the
# deploy tests lint deploy.sh with Debian's shellcheck.
browser:
	@command -v chromium >/dev/null && command -v shellcheck >/dev/null || { \
	  echo "installing Chromium and shellcheck for the tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium shellcheck >/dev/null; }

# The environments are installed side by side (pip waits on the registries as much as it
# works: on a fresh clone here, with the downloads cached, 2 min 22 s instead of 4 min 6 s one
# after another), then both cores run the tests, a test file per worker at a time (files
# share their servers through fixtures).
test:
	$(MAKE) --no-print-directory -j4 --output-sync=target venv runtime beam browser
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest -n 2 --dist loadfile

# The tests that compare TensorFlow results (pytest -m numerics), run again under the other
# code paths oneDNN can take on another CPU: held to AVX2, to SSE4.1, and oneDNN off. Each
# check's largest difference goes to tests/NUMERICS.md beside its tolerance. CI runs it.
NUMERICS_LOG := test-output/numerics.jsonl
NUMERICS_MODES := default ONEDNN_MAX_CPU_ISA=AVX2 ONEDNN_MAX_CPU_ISA=SSE41 TF_ENABLE_ONEDNN_OPTS=0
test-numerics: venv runtime
	mkdir -p test-output && rm -f $(NUMERICS_LOG)
	for mode in $(NUMERICS_MODES); do \
	  echo "== numerics: $$mode"; \
	  env $$( [ $$mode = default ] || echo $$mode ) DERMCAM_NUMERICS_MODE=$$mode \
	    DERMCAM_NUMERICS_LOG=$(CURDIR)/$(NUMERICS_LOG) \
	    $(PY) -m pytest -n 2 --dist loadfile -m numerics -q || exit 1; \
	done
	$(PY) tests/numerics.py $(NUMERICS_LOG) > tests/NUMERICS.md
	cat tests/NUMERICS.md

# docs/TRUST.md's out-of-scope benchmark: the HAM10000 model, isic-uda1 in scope, the
# registries' non-lesion photographs and degraded lesions out (a few minutes).
scope-benchmark: venv
	$(PY) -m model_store.calibration.benchmark "$$($(PY) -m model_store.catalog ham10000)" \
	  --images data/isic-uda1/images --labels data/isic-uda1/labels.csv \
	  --map melanoma=mel,nevus=nv --out docs/trust

# The planted-shortcut models tests/test_audit.py audits (tests/fixtures/shortcuts; about
# 3 minutes): trained once here and committed, never retrained inside a test.
fixtures: venv
	$(PY) -m model_store.demos.shortcuts fixtures

# make run MODEL=ham10000 (a real HAM10000 network, fetched by hash and exported once),
# MODEL=demo-metadata, MODEL=path/to/model/dir; the demo by default.
run: venv
	$(PY) -m devstack.stack $(if $(MODEL),--model $(MODEL)) $(if $(APPCHECK),--appcheck)

# deploy.sh, unchanged, with the real gcloud against a local cloud (devstack/localcloud.py):
# functions built from their own requirements, the page, warmup jobs firing. A rerun updates.
deploy-local: venv browser
	$(PY) -m devstack.rehearsal $(if $(MODEL),--model $(MODEL)) $(ARGS)

# make deploy ARGS="--project my-project [--dry-run] ..." [MODEL=ham10000]; ./deploy.sh --help
deploy:
	./deploy.sh $(if $(MODEL),--model $(MODEL)) $(ARGS)

demo: venv
	$(PY) -m model_store.demo

# The metadata demo (image + patient age, sex, site): model_store/models/demo-metadata/1.
demo-metadata: venv
	$(PY) -m model_store.metadata_demo

clean:
	rm -rf $(VENV) $(RUNTIME_VENV) $(BEAM_VENV) $(TORCH_VENV) build .pytest_cache .ruff_cache test-output .cache
