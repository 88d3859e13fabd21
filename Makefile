# Each target creates the virtual environment it needs; nothing is assumed installed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# tflite-runtime 2.14 (what Raspberry Pi images ship) fails with numpy 2: it gets its own venv, without torch.
TFLRT_VENV := .venv-tflrt
TFLRT_STAMP := $(TFLRT_VENV)/.installed-stamp
PIP_FLAGS := -q --disable-pip-version-check -c constraints.txt

.PHONY: demo test lint bench venv tflrt clean bench-peers peer-venvs

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -e '.[export,micro,train,dev,executorch,ort]'
	touch $@

tflrt: $(TFLRT_STAMP)

$(TFLRT_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(TFLRT_VENV)
	$(TFLRT_VENV)/bin/python -m pip install $(PIP_FLAGS) 'numpy<2' 'tflite-runtime==2.14.0'
	touch $@

# edge-lstm train (a fixed number of epochs: the same figures on every run), then edge-lstm export.
demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP) $(TFLRT_STAMP)
	$(VENV)/bin/ruff check edge_lstm tests examples benchmarks
	EDGE_LSTM_TFLRT_PYTHON=$(abspath $(TFLRT_VENV))/bin/python $(VENV)/bin/pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check edge_lstm tests examples benchmarks
	$(VENV)/bin/mypy edge_lstm

bench: $(STAMP)
	$(PY) benchmarks/tflite.py
	$(PY) benchmarks/profile_overhead.py
	$(PY) benchmarks/quantize.py
	$(PY) benchmarks/firmware.py
	$(PY) benchmarks/predict.py

# Peer converters, each in its own venv (never TensorFlow: an install that pulls it fails the target).
# onnx2tf 2.x needs Python >= 3.12; litert-torch and ExecuTorch install with constraints.txt's torch pin.
PYTHON312 ?= $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)/versions/3.12.1/bin/python
ONNX2TF_VENV := .venv-onnx2tf
LITERT_TORCH_VENV := .venv-litert-torch
EXECUTORCH_VENV := .venv-executorch
NO_TF = ! $(1)/bin/python -m pip list 2>/dev/null | grep -i '^tensorflow' || { echo "$(1) pulled TensorFlow" >&2; exit 1; }

peer-venvs: $(ONNX2TF_VENV)/.installed-stamp $(LITERT_TORCH_VENV)/.installed-stamp $(EXECUTORCH_VENV)/.installed-stamp

$(ONNX2TF_VENV)/.installed-stamp: constraints.txt
	$(PYTHON312) -m venv $(ONNX2TF_VENV)
	$(ONNX2TF_VENV)/bin/python -m pip install $(PIP_FLAGS) 'onnx2tf==2.6.9'
	$(call NO_TF,$(ONNX2TF_VENV))
	touch $@

$(LITERT_TORCH_VENV)/.installed-stamp: constraints.txt
	$(PYTHON) -m venv $(LITERT_TORCH_VENV)
	$(LITERT_TORCH_VENV)/bin/python -m pip install $(PIP_FLAGS) 'litert-torch==0.10.0'
	$(call NO_TF,$(LITERT_TORCH_VENV))
	touch $@

$(EXECUTORCH_VENV)/.installed-stamp: constraints.txt
	$(PYTHON) -m venv $(EXECUTORCH_VENV)
	$(EXECUTORCH_VENV)/bin/python -m pip install $(PIP_FLAGS) 'executorch==1.5.1' torch  # executorch does not declare torch
	$(call NO_TF,$(EXECUTORCH_VENV))
	touch $@

# One table: edge-lstm's artifacts and every peer converter on three model shapes (benchmarks/peers.py --help).
bench-peers: $(STAMP) peer-venvs
	$(PY) benchmarks/peers.py --onnx2tf-python $(ONNX2TF_VENV)/bin/python \
		--litert-torch-python $(LITERT_TORCH_VENV)/bin/python --executorch-python $(EXECUTORCH_VENV)/bin/python \
		$(BENCH_PEERS_ARGS)

clean:
	rm -rf $(VENV) $(TFLRT_VENV) $(ONNX2TF_VENV) $(LITERT_TORCH_VENV) $(EXECUTORCH_VENV) examples/out
