# bpfproxy: `make demo` and `make test` work from a fresh Debian 12 machine as root.
VENV      ?= .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all setup host venv demo test test-unit test-kernel lint clean lab-down bench bench-quick

all: test

## setup: system packages, kernel headers for bcc, the virtualenv and the package (idempotent)
setup: host venv

host:
	@bash deploy/setup-host.sh

# The venv sees system site packages so Debian's bcc (python3-bpfcc) imports; never PyPI's "bcc".
$(PY):
	/usr/bin/python3 -m venv --system-site-packages $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

venv: host $(STAMP)

## lint: ruff and mypy over every Python module
lint: venv
	$(VENV)/bin/ruff check bpfproxy loader controller tests bench
	@# mypy cannot follow the editable install's folder mapping: check a symlink tree laid out
	@# as installed (bpfproxy/, bpfproxy/loader -> loader/, bpfproxy/controller -> controller/).
	@rm -rf build/typecheck && mkdir -p build/typecheck/bpfproxy
	@for f in bpfproxy/*; do case $$f in *__pycache__) ;; *) ln -s ../../../$$f build/typecheck/bpfproxy/ ;; esac; done
	@ln -s ../../../loader build/typecheck/bpfproxy/loader
	@ln -s ../../../controller build/typecheck/bpfproxy/controller
	cd build/typecheck && ../../$(VENV)/bin/mypy --config-file ../../pyproject.toml -p bpfproxy
	@# bench/ scripts import each other as top-level modules (bench/run.py puts bench/ on sys.path)
	cd bench && ../$(VENV)/bin/mypy --config-file ../pyproject.toml --explicit-package-bases *.py

## test: lint, then every test (unit, bpf, netns); needs root
test: lint
	$(VENV)/bin/pytest -q -p no:cacheprovider $(PYTEST_ARGS) tests

test-unit: venv
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/unit

## demo: build the network-namespace lab, show load balancing live, tear it down
demo: venv
	$(VENV)/bin/bpfproxy lab demo

## lab-down: remove every lab this machine still has
lab-down: venv
	$(VENV)/bin/bpfproxy lab down --all

## bench: B1 per-packet, B2 end to end vs kube-proxy iptables/nftables, B4 memory (root, ~30 min); see bench/README.md
## bench-quick: the same with fewer sizes and repeats (under 5 minutes)
BENCH_PKGS := iptables nftables gcc python3-matplotlib
BENCH_DEPS  = dpkg -s $(BENCH_PKGS) >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q $(BENCH_PKGS); }

bench: venv
	@$(BENCH_DEPS)
	$(PY) bench/run.py

bench-quick: venv
	@$(BENCH_DEPS)
	$(PY) bench/run.py --quick

clean:
	rm -rf $(VENV) build *.egg-info
