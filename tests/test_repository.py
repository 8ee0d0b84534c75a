"""A clone runs its own tests: nothing in tests/ or benchmarks/ reads data from outside the repository
(issue 18 item 9)."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_test_data_lives_in_the_repository(testdata):
    assert testdata.resolve().is_relative_to(REPO)
    assert (testdata / "libpcap_en10mb_filters.txt").is_file() and any((testdata / "pcaps").glob("*.pcap"))


def test_no_test_or_benchmark_reaches_outside_the_repository():
    outside = re.compile(r"""parents\[(\d+)\]|/work/|"shared" */|shared/testdata""")
    found = []
    for path in [*REPO.joinpath("tests").rglob("*.py"), *REPO.joinpath("benchmarks").rglob("*.py")]:
        depth = len(path.relative_to(REPO).parts) - 1  # parents[depth] is the repository itself
        for m in outside.finditer(path.read_text()):
            if m.group(1) is not None and int(m.group(1)) <= depth:
                continue
            if path == Path(__file__).resolve():
                continue
            found.append(f"{path.relative_to(REPO)}: {m.group(0)}")
    assert not found, found
