"""Run-time compiled code cannot read host files, and clang runs bounded and unprivileged (issue 11 §1).

Every hostile form is refused with a ConfigError naming the user's line, and no message ever carries
another file's contents. These tests run clang for real (no kernel BPF needed)."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pynetmon import sandbox, source_policy
from pynetmon.dynmon.dialect import translate
from pynetmon.errors import CompileError, ConfigError
from pynetmon.toolchain import compile_c, include_dirs

PROGRAM = ('#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n'
           'SEC("tc") int f(struct __sk_buff *s) { return 0; }\nchar LICENSE[] SEC("license") = "GPL";\n')
SECRET = "pynetmon-secret-7f3a9c"


@pytest.fixture
def secret(tmp_path):
    """A file only root can read, with a recognisable content (stands for /etc/shadow or the token)."""
    path = tmp_path / "secret.txt"
    path.write_text(f"{SECRET}\n")
    path.chmod(0o600)
    return path


def _refused(code: str, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        compile_c(code, use_cache=False, **kw)
    assert SECRET not in str(info.value)
    return info.value


def test_a_plain_program_compiles():
    assert compile_c(PROGRAM, use_cache=False).startswith(b"\x7fELF")


@pytest.mark.parametrize(("line", "code", "says"), [
    (2, 'int a;\n#include "{secret}"\n', "absolute path"),
    (1, '#include "../../../../../../../{secret}"\n', "'..'"),
    (1, '#include <../../etc/passwd>\n', "'..'"),
    (3, 'int a;\nint b;\n#include_next <linux/bpf.h>\n', "#include_next"),
    (1, '#if __has_include("{secret}")\n#endif\n', "absolute path"),
    (1, '#if __has_include_next(<stdint.h>)\n#endif\n', "__has_include_next"),
    (2, 'int a;\nasm(".incbin \\"{secret}\\"");\n', ".incbin"),
    (1, 'asm(".inc" "lude \\"{secret}\\"");\n', ".include"),
    (1, 'asm("\\56incbin \\"{secret}\\"");\n', ".incbin"),
    (1, '#pragma GCC dependency "{secret}"\n', "#pragma GCC dependency"),
    (1, '_Pragma("clang module import secret")\n', "#pragma clang module"),
    (2, '#define F "{secret}"\n#include F\n', "computed includes"),
    (1, '#inc\\\nlude "{secret}"\n', "absolute path"),
    (1, '%:include "{secret}"\n', "absolute path"),
    (1, '#import "{secret}"\n', "#import"),
    (1, '#include <stdio.h>\n', "not one of the headers pynetmon ships"),
    (1, '#include "/proc/self/fd/0"\n', "absolute path"),
    (1, '#include "/dev/zero"\n', "absolute path"),
])
def test_file_reading_forms_are_refused_naming_the_line(secret, line, code, says):
    err = _refused(code.replace("{secret}", str(secret)), filename="ingress-path.bpf.c")
    assert err.problems[0][0] == f"ingress-path.bpf.c:{line}", err.problems
    assert says in err.problems[0][1]


def test_directives_built_by_macros_are_refused_after_preprocessing(secret):
    # Nothing in the text spells ".incbin" inside an asm string: only clang's IR shows it.
    err = _refused(f'#define S(x) #x\n#define A(x) asm(S(x))\nA(.incbin "{secret}");\n')
    assert ".incbin" in str(err)


def test_lines_are_the_users_own_in_a_dynmon_translation(secret):
    code = f'BPF_ARRAY(c, u64, 1);\nstatic int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) {{\n' \
           f'  return RX_OK;\n}}\n#include "{secret}"\n'
    unit = translate(code, direction="ingress", origin="ingress-path.code")
    err = _refused(unit.source, filename="ingress-path.bpf.c")
    assert err.problems[0][0] == "ingress-path.code:5"


def test_a_fifo_does_not_hang_the_compile(tmp_path):
    fifo = tmp_path / "pipe.h"
    os.mkfifo(fifo)
    _refused(f'#include "{fifo}"\n')
    _refused('#include "pipe.h"\n')  # not in any allowed directory either


@pytest.mark.parametrize("flag", ["-I/etc", "-isystem/etc", "--", "-include/etc/passwd", "@/etc/passwd",
                                  "-Wp,-include,/etc/passwd", "-Xclang", "-o/tmp/x"])
def test_flags_cannot_inject_include_paths(flag):
    err = _refused(PROGRAM, cflags=("-DX=1", flag))
    assert err.problems == [("cflags[1]", err.problems[0][1])]


def test_a_library_caller_names_extra_include_dirs_explicitly(tmp_path):
    (tmp_path / "mine.h").write_text("#define MINE 7\n")
    code = '#include "mine.h"\n' + PROGRAM.replace("return 0", "return MINE")
    _refused(code)
    assert compile_c(code, include_dirs=[tmp_path]).startswith(b"\x7fELF")
    assert len(include_dirs([tmp_path])) == len(include_dirs()) + 1
    (tmp_path / "mine.h").write_text("#define MINE x\n")  # a changed header is seen (not a stale copy)
    with pytest.raises(CompileError, match="undeclared identifier 'x'"):
        compile_c(code, include_dirs=[tmp_path])


def test_diagnostics_quote_only_the_users_lines():
    # A type error caught inside a shipped header: the message may name the header, never quote it.
    text = ('prog.c:3:5: error: bad\n  int x = ;\n      ^\n'
            '/x/include/linux/bpf.h:10:2: note: declared here\n  struct secret_line;\n  ^\n1 error generated.')
    out = source_policy.quote_user_lines(text, {"prog.c"})
    assert "int x = ;" in out and "/x/include/linux/bpf.h:10:2: note" in out
    assert "secret_line" not in out and out.endswith("1 error generated.")


def test_a_compile_that_takes_too_long_is_killed():
    before = sandbox.limits()
    sandbox.configure(timeout=0.5)
    try:
        src = "#define A0 1\n" + "".join(f"#define A{i} (A{i - 1}+A{i - 1})\n" for i in range(1, 30))
        with pytest.raises(CompileError, match="did not finish within 0.5 s"):
            compile_c(src + "#if A29\nint x;\n#endif\n", use_cache=False)
    finally:
        sandbox.configure(timeout=before.timeout)


@pytest.mark.skipif(os.geteuid() != 0, reason="privileges are dropped only when running as root")
def test_clang_runs_as_nobody_with_limits_and_a_minimal_environment(tmp_path):
    with sandbox.workdir() as work:
        proc = sandbox.run(["sh", "-c", "id -u; ulimit -v; ulimit -c; env | sort; cat /dev/stdin | wc -c"], work)
    out = proc.stdout.decode().split()
    assert out[0] == "65534"
    assert out[1] == str(sandbox.limits().memory // 1024) and out[2] == "0"
    assert "TMPDIR=" + str(work) in out and not any(v.startswith(("SUDO", "PYTHON", "CI=")) for v in out)
    assert out[-1] == "0"  # stdin is /dev/null
    assert not work.exists()


def test_parallel_compiles_are_bounded():
    running, peak, lock = [0], [0], threading.Lock()
    real = sandbox.subprocess.Popen

    class Counting(real):
        def __init__(self, *a, **kw):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            super().__init__(*a, **kw)

        def communicate(self, *a, **kw):
            try:
                return super().communicate(*a, **kw)
            finally:
                with lock:
                    running[0] -= 1

    sandbox.subprocess.Popen = Counting
    try:
        threads = [threading.Thread(target=compile_c, args=(PROGRAM.replace("0;", f"{i};"),),
                                    kwargs={"use_cache": False}) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sandbox.subprocess.Popen = real
    assert 1 <= peak[0] <= sandbox.limits().parallel


@given(st.text(alphabet="abc./-_<>\"\\ \n", max_size=30))
def test_no_accepted_header_name_leaves_the_include_tree(name):
    if source_policy.header_problem(name, include_dirs()) is None:
        assert not name.startswith("/") and ".." not in name.split("/")
        assert any(os.path.realpath(os.path.join(d, name)).startswith(os.path.realpath(d) + "/")
                   for d in include_dirs())


def test_inline_assembler_without_directives_still_compiles():
    # Two checked steps (C → IR, checked, → object); libbpf's bpf_tail_call_static() needs them too.
    code = PROGRAM.replace("return 0;", 'int x = 1; barrier_var(x); asm volatile("r0 = 0" ::: "r0"); return x;')
    assert compile_c(code, use_cache=False).startswith(b"\x7fELF")
    assert "bpf_tail_call_static" in Path(include_dirs()[-1], "bpf", "bpf_helpers.h").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="privileges are dropped only when running as root")
def test_a_tmpdir_only_root_can_enter_is_passed_by(tmp_path, monkeypatch):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    monkeypatch.setattr(sandbox.tempfile, "tempdir", str(private))
    assert compile_c(PROGRAM.replace("0;", "11;"), use_cache=False).startswith(b"\x7fELF")
    assert sandbox.reachable_tmpdir() == "/tmp" and not any(private.iterdir())


def test_code_without_assembler_compiles_in_one_clang_run(monkeypatch):
    # The shipped headers' own inline assembler (libbpf's tail call, x86's bswap) is out of the way,
    # so the one-step path (GNU asm off) serves Polycube code including <linux/in.h> and libbpf code.
    runs = []
    real = sandbox.run
    monkeypatch.setattr(sandbox, "run", lambda *a, **kw: runs.append(a[0]) or real(*a, **kw))
    code = 'BPF_ARRAY(c, u64, 1);\nstatic int handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md) ' \
           '{ return RX_OK; }\n'
    compile_c(translate(code, direction="ingress").source, use_cache=False)
    compile_c('#include <linux/in.h>\n' + PROGRAM, use_cache=False)
    assert len(runs) == 2 and all("-fno-gnu-inline-asm" in argv for argv in runs)
