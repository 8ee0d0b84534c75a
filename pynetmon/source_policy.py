"""What C compiled at run time may do: include only the headers pynetmon ships, and read no other file.

Dynmon code reaches clang from the network, and clang runs as root in the daemon's process tree; a C
preprocessor and an assembler can both read files (`#include "/etc/shadow"`, `asm(".incbin ...")`). The
compile (pynetmon/toolchain.py) therefore searches a restricted include tree only, and this module checks
the code before and after clang sees it:

* `check_source`: before clang runs, every preprocessor directive, `_Pragma`, `__has_include` and `asm`
  of the translation unit; each refusal names the user's file and line (the `#line` names Dynmon gives).
* `check_cflags`: flags a library caller passes; include directories are a separate, explicit argument.
* `check_dependencies`: clang's own list of the files it opened (`-MD`) lies inside the allowed
  directories: a backstop for whatever a macro could build that `check_source` did not see.
* `check_ir`: the assembler text of every `asm` in clang's IR (macros expanded, escapes decoded, strings
  joined) has no assembler directive, so `.incbin`/`.include` built by any trick is refused before the
  assembler runs.
* `quote_user_lines`: clang's diagnostics keep the source lines they quote only for the user's files.

docs/security.md states the rules for users.
"""
from __future__ import annotations

import bisect
import os
import re
import shlex
from collections.abc import Iterable, Sequence

from .errors import ConfigError

# Directives that only define, test or report: none of them opens a file. `include` is checked by name.
_DIRECTIVES = {"define", "undef", "if", "ifdef", "ifndef", "elif", "elifdef", "elifndef", "else", "endif",
               "line", "error", "warning", "pragma", "include", ""}
# Pragmas that change code generation or warnings only. Refused among others: `GCC dependency` (stats a
# file), `clang module` (loads one), `clang __debug` (crashes clang), `include_alias`, `comment`.
_PRAGMAS = ("once", "pack", "unroll", "nounroll", "message", "push_macro", "pop_macro", "GCC diagnostic",
            "clang diagnostic", "clang loop", "GCC unroll", "GCC poison", "clang attribute", "clang optimize",
            "STDC", "GCC push_options", "GCC pop_options", "GCC optimize")
# A header name: relative, plain characters, no `..` (checked separately), nothing a shell or clang reads
# as anything but a path.
_HEADER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_+.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_+.-]*)*")
_DIRECTIVE = re.compile(r"^[ \t\f\v]*(?:#|%:)[ \t\f\v]*([A-Za-z_]\w*|\d+)?(.*)$", re.MULTILINE)
_KEYWORDS = re.compile(r"\b(_Pragma|__pragma|__has_include_next|__has_include|__has_embed|__asm__|__asm|asm)\b")
_ASM_QUALIFIERS = {"volatile", "__volatile__", "__volatile", "goto", "inline", "__inline__", "__inline"}
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
# An assembler directive: `.incbin`, `.include`, `.macro`... BPF instructions never start with a dot.
_ASM_DIRECTIVE = re.compile(r"\.[A-Za-z_]")
# Flags a caller may pass; include paths go through `include_dirs=` (never -I, -isystem, -include, @file,
# -Wp,/-Wa, which would open files or hand options to another stage).
_CFLAG = re.compile(r"-D[A-Za-z_]\w*(?:=[^\n]*)?|-U[A-Za-z_]\w*|-W(?:no-)?[a-z][a-z0-9=_+-]*|-O[0-3sz]?"
                    r"|-g[0-9]?|-mcpu=(?:v[1-4]|probe|generic)|-std=(?:gnu|c)(?:89|99|11|17|2x)|-ferror-limit=\d+")


def blank(code: str, *, strings: bool = True) -> str:
    """`code` with comments (and, if `strings`, string and char literals) replaced by spaces; newlines and
    offsets stay where they are, so a match in the result is a match at the same place in `code`."""
    out = []
    i, n = 0, len(code)
    while i < n:
        c = code[i]
        if code.startswith("//", i):
            j = code.find("\n", i)
            j = n if j < 0 else j
        elif code.startswith("/*", i):
            j = code.find("*/", i + 2)
            j = n if j < 0 else j + 2
        elif c in "\"'":
            j = i + 1
            while j < n and code[j] != c and code[j] != "\n":
                j += 2 if code[j] == "\\" else 1
            j = min(j + 1, n)
            if not strings:
                out.append(code[i:j])
                i = j
                continue
        else:
            out.append(c)
            i += 1
            continue
        out.append("".join(ch if ch == "\n" else " " for ch in code[i:j]))
        i = j
    return "".join(out)


def decode_c_string(literal: str) -> str:
    """The characters of one C string literal (with its quotes): escapes decoded as a C compiler does."""
    body, out, i = literal[1:-1], [], 0
    simple = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "e": "\x1b"}
    while i < len(body):
        c = body[i]
        if c != "\\" or i + 1 == len(body):
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt == "x":
            m = re.match(r"[0-9A-Fa-f]+", body[i + 2:])
            out.append(chr(int(m.group(0), 16) & 0xFF) if m else "x")
            i += 2 + (len(m.group(0)) if m else 0)
        elif nxt in "01234567":
            m = re.match(r"[0-7]{1,3}", body[i + 1:])
            out.append(chr(int(m.group(0), 8) & 0xFF))
            i += 1 + len(m.group(0))
        else:
            out.append(simple.get(nxt, nxt))
            i += 2
    return "".join(out)


class _Lines:
    """The source with line splices (backslash-newline) joined, as the preprocessor sees it, and a map
    from its offsets to `file:line` as the user knows them: physical lines, renamed and renumbered by
    `#line` directives."""

    def __init__(self, code: str, filename: str):
        logical: list[str] = []
        self.physical: list[int] = []  # first physical line of each logical line
        pending: list[str] = []
        first = None
        for number, chunk in enumerate(code.split("\n"), 1):
            first = first or number
            stripped = chunk.rstrip(" \t\r")  # clang splices "\\ \n" too (with a warning)
            if stripped.endswith("\\"):
                pending.append(stripped[:-1])
                continue
            pending.append(chunk)
            logical.append("".join(pending))
            self.physical.append(first)
            pending, first = [], None
        if pending:
            logical.append("".join(pending))
            self.physical.append(first or 1)
        self.text = "\n".join(logical)
        self.starts = [0] + [m.end() for m in re.finditer("\n", self.text)]
        self.filename = filename
        self.renames: list[tuple[int, str, int]] = []  # (logical line index, file, number of the next line)

    def index(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset) - 1

    def where(self, offset: int) -> str:
        k = self.index(offset)
        name, base_k, base_line = self.filename, -1, 1
        for rk, rname, rline in self.renames:
            if rk < k:
                name, base_k, base_line = rname, rk, rline
        if base_k < 0:
            return f"{name}:{self.physical[k]}"
        return f"{name}:{base_line + self.physical[k] - self.physical[base_k] - 1}"


def check_source(source: str, *, filename: str, search_dirs: Sequence[str]) -> None:
    """Refuse code that could read a file other than an allowed header; ConfigError naming each line.

    `search_dirs` are the directories clang will search; an `#include` must name a header inside one.
    """
    lines = _Lines(source, filename)
    text = lines.text
    no_comments = blank(text, strings=False)
    bare = blank(text)
    problems: list[tuple[str, str]] = []
    for m in _DIRECTIVE.finditer(bare):
        name = m.group(1) or ""
        rest = no_comments[m.start(2):m.end(2)].strip() if m.group(2) is not None else ""
        where = lines.where(m.start())
        if name.isdigit() or name == "line":
            _record_line(lines, m.start(), name, rest)
            continue
        if name not in _DIRECTIVES:
            problems.append((where, (f"#{name} is not allowed in code that pynetmon compiles "
                                    "(it can read files or change how clang searches them)")))
        elif name == "include":
            problem = _include_problem(rest, search_dirs)
            if problem:
                problems.append((where, problem))
        elif name == "pragma":
            problem = _pragma_problem(rest)
            if problem:
                problems.append((where, problem))
    for m in _KEYWORDS.finditer(bare):
        problem = _keyword_problem(m.group(1), no_comments, m.end(), search_dirs)
        if problem:
            problems.append((lines.where(m.start()), problem))
    if problems:
        raise ConfigError(problems)


def _record_line(lines: _Lines, offset: int, name: str, rest: str) -> None:
    words = (rest if name == "line" else f"{name} {rest}").split(None, 1)
    if not words or not words[0].isdigit():
        return
    fname = lines.filename
    if len(words) > 1:
        s = _STRING.match(words[1].strip())
        if s:
            fname = decode_c_string(s.group(0))
    k = lines.index(offset)
    lines.renames.append((k, fname, int(words[0])))


def header_problem(name: str, search_dirs: Sequence[str], *, must_exist: bool = True) -> str | None:
    """Why `name` (what stands between <> or "") may not be included, or None when it may."""
    shown = name if len(name) <= 80 else name[:77] + "..."
    if name.startswith("/"):
        return f"absolute path {shown!r}: only the headers pynetmon ships can be included"
    if ".." in name.split("/"):
        return f"{shown!r} leaves the include directories ('..'): only the headers pynetmon ships can be included"
    if not _HEADER_NAME.fullmatch(name):
        return f"{shown!r} is not a plain header name"
    if must_exist and not any(os.path.isfile(os.path.join(d, name)) for d in search_dirs):
        return (f"{shown!r} is not one of the headers pynetmon ships (linux/*.h networking UAPI, "
                "bpf/bpf_helpers.h and its family, pynetmon/*.h, C's stdint.h...); see docs/security.md")
    return None


def _include_problem(rest: str, search_dirs: Sequence[str]) -> str | None:
    m = re.match(r'<([^>\n]*)>|"([^"\n]*)"', rest)
    if not m:
        return "#include must name a header as <name> or \"name\" (computed includes are not allowed)"
    return header_problem(m.group(1) if m.group(1) is not None else m.group(2), search_dirs)


def _pragma_problem(rest: str) -> str | None:
    words = " ".join(rest.replace("(", " ( ").split()[:2])
    first = words.split(" ", 1)[0] if words else ""
    if any(words == p or words.startswith(p + " ") or first == p for p in _PRAGMAS):
        return None
    shown = rest if len(rest) <= 60 else rest[:57] + "..."
    return (f"#pragma {shown} is not allowed: only pragmas that change code generation or warnings are "
            "(once, pack, unroll, clang loop, GCC diagnostic...); others can read files or crash the compiler")


def _keyword_problem(word: str, code: str, end: int, search_dirs: Sequence[str]) -> str | None:
    rest = code[end:]
    if word in ("__has_include_next", "__has_embed"):
        return f"{word} is not allowed in code that pynetmon compiles"
    if word == "__has_include":
        m = re.match(r'\s*\(\s*(?:<([^>\n]*)>|"([^"\n]*)")\s*\)', rest)
        if not m:
            return "__has_include must name a header as <name> or \"name\" (computed names are not allowed)"
        return header_problem(m.group(1) if m.group(1) is not None else m.group(2), search_dirs, must_exist=False)
    if word in ("_Pragma", "__pragma"):
        m = re.match(r'\s*\(\s*(' + _STRING.pattern + r')\s*\)', rest)
        if not m:
            return f"{word} must be given one string literal"
        return _pragma_problem(decode_c_string(m.group(1)))
    # asm, __asm, __asm__ [qualifiers] ( "template" ... )
    i = 0
    while True:
        m = re.match(r"\s*([A-Za-z_]\w*)", rest[i:])
        if not m or m.group(1) not in _ASM_QUALIFIERS:
            break
        i += m.end()
    m = re.match(r"\s*\(", rest[i:])
    if not m:
        return f"{word} must be followed by its assembler text in parentheses"
    body = _parenthesized(rest, i + m.end())
    text = "".join(decode_c_string(s) for s in _STRING.findall(body))
    return asm_problem(text)


def asm_problem(text: str) -> str | None:
    """Why this assembler text may not be compiled (it holds a directive), or None."""
    m = _ASM_DIRECTIVE.search(text)
    if not m:
        return None
    directive = re.match(r"\.\w+", text[m.start():]).group(0)
    return (f"assembler directive {directive!r} in asm(): directives are not allowed (.incbin and .include "
            "read files); write BPF instructions only")


def _parenthesized(text: str, start: int) -> str:
    """The text from `start` (just after '(') to the matching ')', string literals kept whole."""
    depth, i = 0, start
    while i < len(text):
        c = text[i]
        if c == '"':
            m = _STRING.match(text, i)
            i = m.end() if m else i + 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            if depth == 0:
                return text[start:i]
            depth -= 1
        i += 1
    return text[start:]


def check_cflags(cflags: Iterable[str]) -> None:
    """Refuse compiler flags that could read files or reach another stage (-I, -include, @file, -Wp,...)."""
    problems = [(f"cflags[{i}]", (f"{flag!r} is not an allowed compiler flag (allowed: -DNAME[=VALUE], -UNAME, "
                                 "-W<warning>, -O<level>, -g, -mcpu=, -std=; include directories go in "
                                 "include_dirs)"))
                for i, flag in enumerate(cflags) if not _CFLAG.fullmatch(flag)]
    if problems:
        raise ConfigError(problems)


def check_dependencies(depfile: str, allowed_roots: Sequence[str], sources: Sequence[str], base: str) -> None:
    """Every file in a make-style dependency list (clang -MD, paths relative to `base`) is one of
    `sources` or lies inside an allowed root."""
    rule = depfile.replace("\\\n", " ")
    files = [os.path.join(base, f) for f in shlex.split(rule.split(":", 1)[1])] if ":" in rule else []
    roots = [os.path.realpath(r) + os.sep for r in allowed_roots]
    own = {os.path.realpath(s) for s in sources}
    outside = [f for f in files
               if os.path.realpath(f) not in own and not os.path.realpath(f).startswith(tuple(roots))]
    if outside:
        raise ConfigError([("", (f"the code reached {outside[0]!r}, outside the headers pynetmon ships "
                                "(through a macro?); only the shipped headers can be included"))])


def check_ir(ir: str) -> None:
    """Refuse IR whose inline or module-level assembler holds a directive (see `asm_problem`)."""
    for lineno, line in enumerate(ir.splitlines(), 1):
        if "asm" not in line:
            continue
        tokens = re.finditer(r'"(?:[^"\\]|\\.)*"|\basm\b', line)
        for tok in tokens:
            if tok.group(0) != "asm":
                continue
            template = next((t for t in tokens if t.group(0).startswith('"')), None)
            text = _decode_ir_string(template.group(0)) if template else ""
            problem = asm_problem(text)
            if problem:
                loc = re.search(r"!dbg !(\d+)", line)
                where = _ir_location(ir, loc.group(1)) if loc else ""
                raise ConfigError([(where, problem + " (the directive was built by a macro or an escape)")])


def _decode_ir_string(literal: str) -> str:
    return re.sub(r"\\([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), literal[1:-1]).replace("\\\\", "\\")


def _ir_location(ir: str, node: str) -> str:
    m = re.search(rf"^!{node} = !DILocation\(line: (\d+).*?scope: !(\d+)", ir, re.MULTILINE)
    if not m:
        return ""
    f = re.search(rf'^!{m.group(2)} = .*?file: !(\d+)', ir, re.MULTILINE)
    name = re.search(rf'^!{f.group(1)} = !DIFile\(filename: "([^"]*)"', ir, re.MULTILINE) if f else None
    return f"{name.group(1)}:{m.group(1)}" if name else f"line {m.group(1)}"


_DIAGNOSTIC = re.compile(r"^(?P<file>[^\n:]+):\d+:\d+: (?:fatal error|error|warning|note|remark): ")


def quote_user_lines(diagnostics: str, user_files: Iterable[str]) -> str:
    """clang's diagnostics with the source lines (and carets) it quotes from files other than the user's
    removed: a message about a shipped header may be shown, never the header's text."""
    user = set(user_files)
    out, quoting = [], True
    for line in diagnostics.splitlines():
        m = _DIAGNOSTIC.match(line)
        if m:
            quoting = m.group("file") in user
            out.append(line)
        elif line.startswith("In file included from") or re.match(r"^\d+ (warning|error)s? ", line) \
                or re.match(r"^\d+ warnings? and \d+ errors? generated", line) or quoting:
            out.append(line)
    return "\n".join(out)


__all__ = ["asm_problem", "blank", "check_cflags", "check_dependencies", "check_ir", "check_source",
           "decode_c_string", "header_problem", "quote_user_lines"]
