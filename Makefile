# pynetmon — the two commands: `make run` (main job on a fresh Debian 12) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Debian's multiarch triplet, from uname: gcc is not there yet on the first run of a fresh machine.
ARCH_INCLUDE := /usr/include/$(shell uname -m)-linux-gnu
CLANG ?= clang
LLVM_STRIP ?= llvm-strip
BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_x86 -Wall -Werror -Wno-unused-function \
              -Ibpf -Ibpf/include -I$(ARCH_INCLUDE)
BPF_SRC := $(wildcard bpf/*.bpf.c)
BPF_OBJ := $(patsubst bpf/%.bpf.c,pynetmon/data/%.bpf.o,$(BPF_SRC))
BPF_HDR := $(wildcard bpf/*.h) $(shell find bpf/include -name '*.h')
# Ready monitors: bpf/monitors/KIND.bpf.c + KIND.h → pynetmon/data/monitors/KIND.bpf.o
MON_SRC := $(wildcard bpf/monitors/*.bpf.c)
MON_OBJ := $(patsubst bpf/monitors/%.bpf.c,pynetmon/data/monitors/%.bpf.o,$(MON_SRC))
MON_HDR := $(wildcard bpf/monitors/*.h)
BPF_SRC_COPY := $(patsubst bpf/%,pynetmon/data/src/%,$(BPF_SRC) $(wildcard bpf/*.h))
INCLUDE_COPY := $(patsubst bpf/%,pynetmon/data/%,$(shell find bpf/include -name '*.h'))
VMLINUX_USERS := $(patsubst bpf/%.bpf.c,pynetmon/data/%.bpf.o,$(shell grep -l 'vmlinux\.h' $(BPF_SRC) $(MON_SRC)))
# <linux/if.h> (from <linux/icmp.h>, which Dynmon code includes) pulls in glibc's <sys/socket.h>; under
# -target bpf glibc then asks for the 32-bit <gnu/stubs-32.h>, which only libc6-dev-i386 has.
X86_STUBS := $(if $(filter x86_64,$(shell uname -m)),libc6-dev-i386)
APT_PACKAGES := clang llvm libbpf-dev libpcap-dev bpftool iproute2 tcpdump tshark prometheus iperf3 nginx nghttp2-client \
                gcc make libelf-dev zlib1g-dev python3 python3-venv python3-dev linux-libc-dev procps libcap2-bin iputils-ping curl systemd \
                $(X86_STUBS)
STAMP_APT := $(VENV)/.apt-stamp
# The only system headers run-time compiled code can see (docs/security.md): bpf/sandbox-headers.txt and
# what those include, copied out of /usr/include.
SYSROOT := pynetmon/data/sysroot/.complete
STAMP_PY := $(VENV)/.py-stamp
STAMP_EDITABLE := $(VENV)/.editable-stamp
PYTEST_ARGS ?=

.PHONY: all bpf build deps run test bench bench-quick bench-thesis lint clean install image test-image fleet-demo

all: build

bpf: $(BPF_OBJ) $(MON_OBJ) $(INCLUDE_COPY) $(BPF_SRC_COPY) $(SYSROOT)

pynetmon/data/%.bpf.o: bpf/%.bpf.c $(BPF_HDR)
	@mkdir -p pynetmon/data
	$(CLANG) $(BPF_CFLAGS) -Ipynetmon/data -c $< -o $@
	$(LLVM_STRIP) -g $@

pynetmon/data/monitors/%.bpf.o: bpf/monitors/%.bpf.c $(MON_HDR) $(BPF_HDR)
	@mkdir -p pynetmon/data/monitors
	$(CLANG) $(BPF_CFLAGS) -Ibpf/monitors -Ipynetmon/data -c $< -o $@
	$(LLVM_STRIP) -g $@

# vmlinux.h for the tracing monitors (CO-RE): generated from the build machine's BTF, never shipped to
# run time, and only for the objects that include it. Packet programs only use UAPI headers.
$(VMLINUX_USERS): pynetmon/data/vmlinux.h
pynetmon/data/vmlinux.h:
	@mkdir -p pynetmon/data
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

# The C sources of the shipped objects, for objects rebuilt at run time around injected code (the
# capture dataplane around a translated filter).
pynetmon/data/src/%: bpf/%
	@mkdir -p pynetmon/data/src
	cp $< $@

# Headers that run-time compiled code (Dynmon injections, translated filters) may include, copied one by
# one (a stamp file would be as old as a fresh clone's headers and copy nothing).
pynetmon/data/include/%.h: bpf/include/%.h
	@mkdir -p $(@D)
	cp $< $@

$(SYSROOT): bpf/sandbox-headers.txt bpf/sandbox_headers.py
	CLANG=$(CLANG) $(PYTHON) bpf/sandbox_headers.py bpf/sandbox-headers.txt pynetmon/data/sysroot
	touch $@

# Re-checked when the Makefile (APT_PACKAGES) changes; apt-get runs only for what is missing. Debian's
# prometheus package also starts and enables a server on :9090 for good; we need only its binaries (the
# tests start their own on loopback), so a server that this target installed is stopped and disabled.
$(STAMP_APT): Makefile
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing || exit 1; \
	  if [[ " $$missing " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then \
	    echo "stopping and disabling the prometheus service (pynetmon only needs the binaries)"; \
	    systemctl disable --now prometheus.service; \
	  fi; \
	  if [[ " $$missing " == *" nginx "* ]] && [ -d /run/systemd/system ]; then \
	    echo "stopping and disabling the nginx service (the thesis benchmark starts its own)"; \
	    systemctl disable --now nginx.service; \
	  fi; \
	fi
	@mkdir -p $(VENV) && touch $@

$(STAMP_PY): requirements.txt | $(STAMP_APT)
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

deps: $(STAMP_PY)

build: deps bpf $(STAMP_EDITABLE)
	$(PY) setup.py -q build_ext --inplace

# The package installed into .venv in editable mode: `.venv/bin/pynetmon` runs this checkout.
$(STAMP_EDITABLE): setup.py pyproject.toml | $(STAMP_PY) bpf
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

# `pynetmon` on everyone's PATH: a link to the virtual environment's command (or: . .venv/bin/activate).
install: build
	ln -sf $(CURDIR)/$(VENV)/bin/pynetmon /usr/local/bin/pynetmon
	@echo "pynetmon -> $$(readlink /usr/local/bin/pynetmon)"

# Container images (Containerfile): pynetmon:slim (ready monitors, no clang) and pynetmon:latest (with
# clang). The wheels are made here; the Debian 12 base is debootstrapped and imported when missing (no
# registry needed). About a minute here (plus ~30 s for the base once); podman, runc and debootstrap are
# installed from Debian when missing. Not part of `make test`.
IMAGE ?= pynetmon
IMAGE_BASE ?= localhost/pynetmon-base:bookworm
PODMAN := podman --runtime runc --cgroup-manager=cgroupfs
IMAGE_APT_PACKAGES := podman runc debootstrap
image: build
	@missing=$$(for p in $(IMAGE_APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get install -y --no-install-recommends $$missing; fi
	rm -rf build/image/wheels && mkdir -p build/image/wheels
	$(PY) -m pip wheel -q --no-build-isolation --no-deps -w build/image/wheels .
	$(PY) -m pip wheel -q -w build/image/wheels build/image/wheels/pynetmon-*.whl
	deploy/container/base.sh $(IMAGE_BASE) build/image
	$(PODMAN) build --build-arg BASE=$(IMAGE_BASE) --target slim -t $(IMAGE):slim -f Containerfile .
	$(PODMAN) build --build-arg BASE=$(IMAGE_BASE) --target full -t $(IMAGE):latest -f Containerfile .
	$(PODMAN) images --filter reference=$(IMAGE) --format '{{.Repository}}:{{.Tag}} {{.Size}}'

# Opt-in: the images run as docs/deploy.md says (three capabilities, shipped seccomp profile).
test-image: image
	CI=true IMAGE=$(IMAGE) $(PY) -m pytest -q -p no:cacheprovider tests/image/check_image.py

run: build
	$(PY) -m pynetmon demo

# Three nodes (network namespaces) each running pynetmon serve, Prometheus scraping them through file_sd;
# prints PromQL answers beside the traffic sent (pynetmon/testfleet.py, docs/deploy.md). About 15 s.
fleet-demo: build
	$(PY) -m pynetmon.testfleet

# The linters (ruff, mypy) run first: CI runs exactly `make test`, so they gate every landing.
test: build lint
	@mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || true
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: build
	$(PY) -m pytest -q -s $(wildcard benchmarks/bench_*.py) $(PYTEST_ARGS)

# The capture, /metrics and open_metrics()/JSON rows, fewer and shorter rounds, no slow peers: under 3 minutes
# on a quiet machine.
bench-quick: build
	PYNETMON_BENCH_QUICK=1 PYNETMON_BENCH_RUNS=3 PYNETMON_BENCH_SECONDS=2 PYNETMON_BENCH_ROUNDS=5 $(PY) -m pytest -q -s \
	  benchmarks/bench_capture.py benchmarks/bench_service.py "benchmarks/bench_dynmon.py::test_extraction_100k_hash" \
	  $(PYTEST_ARGS)

# The HTTP monitor against the thesis' numbers (benchmarks/thesis): ~10 minutes; the thesis' 60 s runs
# with PYTEST_ARGS=--thesis-durations. Writes benchmarks/results/thesis.*.
bench-thesis: build
	$(PY) -m pytest -q -s -p no:cacheprovider benchmarks/thesis/bench_thesis.py $(PYTEST_ARGS)

lint: deps
	$(PY) -m ruff check pynetmon tests benchmarks
	$(PY) -m mypy

clean:
	rm -rf build pynetmon/data/*.bpf.o pynetmon/data/monitors pynetmon/data/include pynetmon/data/sysroot pynetmon/data/src pynetmon/*.so pynetmon/_libbpf.c pynetmon/_libpcap.c
