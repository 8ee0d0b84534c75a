"""pynetmon: eBPF network monitoring and packet capture.

`python setup.py build` (and `pip install .`) compiles the BPF objects in bpf/ with clang (through the
Makefile's `bpf` target) and builds the cffi extension `pynetmon._libbpf` against the system libbpf.
"""
import subprocess
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildWithBPF(build_py):
    """Compile bpf/*.bpf.c into pynetmon/data/*.bpf.o before the Python files are copied."""

    def run(self):
        subprocess.run(["make", "-C", str(HERE), "bpf"], check=True)
        super().run()


setup(
    name="pynetmon",
    version="0.1.0",
    description="eBPF network monitoring and packet capture for Linux",
    packages=find_packages(include=["pynetmon", "pynetmon.*"]),
    package_data={"pynetmon": ["data/*.bpf.o", "data/monitors/*.bpf.o", "data/include/**/*.h", "data/sysroot/**/*.h", "data/src/*"]},
    python_requires=">=3.11",
    setup_requires=["cffi>=1.15"],
    install_requires=[
        "cffi>=1.15",
        "pyroute2>=0.7",
        "dpkt>=1.9",
        "pydantic>=2",
        "prometheus_client>=0.17",
        # the service and the CLI's live views (`pynetmon serve`, `pynetmon top`)
        "starlette>=0.37",
        "anyio>=4",
        "uvicorn>=0.29",
        "rich>=13",
        "typing_extensions>=4.6",
        "PyYAML>=6",  # `pynetmon serve --config` (YAML or JSON)
    ],
    # NumPy arrays, DataFrames, plots and the Recorder's frames (pynetmon.frames, pynetmon.plot).
    extras_require={"data": ["numpy>=1.24", "pandas>=2.0", "matplotlib>=3.7"]},
    cffi_modules=["cffi_build.py:ffibuilder", "cffi_build.py:pcap_ffibuilder"],
    cmdclass={"build_py": BuildWithBPF},
    entry_points={"console_scripts": ["pynetmon=pynetmon.cli:main"]},
)
