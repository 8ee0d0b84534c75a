"""Hostile Dynmon code against a real daemon (issue 11 §1): every request is refused with a 4xx that
quotes no host file, and while 50 of them are in flight the daemon still answers `GET /dynmon` promptly
(compiles wait for a bounded number of threads and clang processes; reads never queue behind them)."""
from __future__ import annotations

import threading

import httpx

from .daemon import Daemon

HANDLER = "static int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) { return RX_OK; }\n"
# Code that passes every check and keeps clang busy until the compile timeout kills it.
SLOW = "#define A0 1\n" + "".join(f"#define A{i} (A{i - 1}+A{i - 1})\n" for i in range(1, 30)) + \
       "#if A29\nint x;\n#endif\n"
HOSTILE = [
    '#include "/etc/shadow"\n' + HANDLER,
    '#include "../../etc/passwd"\n' + HANDLER,
    '#include "/proc/self/fd/0"\n' + HANDLER,
    '#include "/dev/zero"\n' + HANDLER,
    '#include </dev/stdin>\n' + HANDLER,
    'asm(".incbin \\"/etc/passwd\\"");\n' + HANDLER,
    '#define S(x) #x\n#define A(x) asm(S(x))\nA(.incbin "/etc/passwd");\n' + HANDLER,
    '#pragma GCC dependency "/etc/shadow"\n' + HANDLER,
    '#include_next <linux/bpf.h>\n' + HANDLER,
]


def test_hostile_compiles_are_refused_and_reads_stay_prompt(tmp_path):
    payloads = [HOSTILE[i % len(HOSTILE)] for i in range(46)] + [SLOW] * 4
    answers: dict[int, httpx.Response] = {}
    with Daemon("--compile-timeout", "2", log_path=tmp_path / "serve.log") as d:
        def post(i: int) -> None:
            body = {"dataplane-config": {"ingress-path": {"name": "hostile", "code": payloads[i]}}}
            with httpx.Client(base_url=d.url, timeout=120) as c:
                answers[i] = c.post(f"/polycube/v1/dynmon/hostile{i}", json=body)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(payloads))]
        for t in threads:
            t.start()
        reads = 0
        with httpx.Client(base_url=d.url, timeout=1.0) as reader:  # the bound: 1 s per read
            while any(t.is_alive() for t in threads):
                r = reader.get("/polycube/v1/dynmon")
                assert r.status_code == 200 and r.json() == []
                reads += 1
        for t in threads:
            t.join()
        log = d.log()
    assert reads > 0
    assert sorted(answers) == list(range(len(payloads)))
    for i, r in answers.items():
        assert 400 <= r.status_code < 500, (i, r.status_code, r.text)
        assert "root:" not in r.text and "nologin" not in r.text, r.text
    assert "ingress-path.code:1" in answers[0].text and "absolute path" in answers[0].text
    assert "did not finish within 2 s" in answers[len(payloads) - 1].text
    assert "Traceback" not in log
