"""From the user's C to a compilable libbpf-style translation unit.

Two dialects are accepted:

* **libbpf**: programs in `SEC("tc")` (or `SEC("xdp")`), BTF-defined maps. Compiled as written.
* **Polycube/BCC**: `handle_rx(struct CTXTYPE *ctx, struct pkt_metadata *md)` returning RX_OK/RX_DROP,
  `BPF_TABLE(...)`/`BPF_ARRAY(...)`/... map macros, `NAME.lookup(&k)`-style method calls, BCC's
  `<uapi/linux/*.h>` include paths and `pcn_log()`. A few source rewrites (each keeps the line count)
  turn this into libbpf style with the help of the shipped header `<pynetmon/polycube.h>`, and a
  `SEC("tc")`/`SEC("xdp")` wrapper calls handle_rx().

`#line` directives make clang report errors at the user's own lines, in a file named after the JSON
field the code came from (`ingress-path.code:12:5: error: ...`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError
from ..source_policy import blank as _blank

HOOKS = ("tc", "xdp")
# The program the wrapper defines, per direction (kernel names are cut at 15 characters).
WRAPPER_PROGRAMS = {"ingress": "dynmon_ingress", "egress": "dynmon_egress"}

_MAP_TYPES = {
    "hash": "BPF_MAP_TYPE_HASH", "array": "BPF_MAP_TYPE_ARRAY", "percpu_hash": "BPF_MAP_TYPE_PERCPU_HASH",
    "percpu_array": "BPF_MAP_TYPE_PERCPU_ARRAY", "lru_hash": "BPF_MAP_TYPE_LRU_HASH",
    "lru_percpu_hash": "BPF_MAP_TYPE_LRU_PERCPU_HASH", "lpm_trie": "BPF_MAP_TYPE_LPM_TRIE",
    "queue": "BPF_MAP_TYPE_QUEUE", "stack": "BPF_MAP_TYPE_STACK", "prog": "BPF_MAP_TYPE_PROG_ARRAY",
}
_KEYLESS = {"queue", "stack"}
EXTERN = "extern"  # BPF_TABLE("extern", ...): a map another path defines as _SHARED/_PUBLIC (BCC's rule)
_INT_KEYS = {"int", "u32", "__u32", "uint32_t", "unsigned int", "unsigned", "s32", "__s32", "int32_t"}

_TABLE_PARAMS: list[tuple[str, str | None]] = [("type", None), ("key", None), ("value", None), ("name", None),
                                               ("size", None)]
_QUEUESTACK_PARAMS: list[tuple[str, str | None]] = [("type", None), ("name", None), ("value", None),
                                                    ("size", None), ("flags", "0")]
# Macro name → (table type, parameter names with BCC's defaults; None = required)
_MAP_MACROS: dict[str, tuple[str | None, list[tuple[str, str | None]]]] = {
    "BPF_TABLE": (None, _TABLE_PARAMS),
    "BPF_F_TABLE": (None, [*_TABLE_PARAMS, ("flags", None)]),
    "BPF_TABLE_PINNED": (None, [*_TABLE_PARAMS, ("pinned", None), ("flags", "0")]),
    "BPF_QUEUESTACK": (None, _QUEUESTACK_PARAMS),
    "BPF_QUEUESTACK_PINNED": (None, [*_QUEUESTACK_PARAMS[:4], ("flags", None), ("pinned", None)]),
    "BPF_ARRAY": ("array", [("name", None), ("value", "u64"), ("size", "10240")]),
    "BPF_PERCPU_ARRAY": ("percpu_array", [("name", None), ("value", "u64"), ("size", "10240")]),
    "BPF_HASH": ("hash", [("name", None), ("key", "u64"), ("value", "u64"), ("size", "10240")]),
    "BPF_PERCPU_HASH": ("percpu_hash", [("name", None), ("key", "u64"), ("value", "u64"), ("size", "10240")]),
    "BPF_LRU_HASH": ("lru_hash", [("name", None), ("key", "u64"), ("value", "u64"), ("size", "10240")]),
    "BPF_QUEUE": ("queue", [("name", None), ("value", None), ("size", None)]),
    "BPF_STACK": ("stack", [("name", None), ("value", None), ("size", None)]),
    "BPF_HISTOGRAM": ("histogram", [("name", None), ("key", "int"), ("size", "64")]),
}
# How a map is visible to the other path (BCC's sections, as Polycube's cubes use them): `_SHARED` to the
# programs of the same cube (maps/shared), `_PUBLIC` to every program (maps/export), `_PINNED` at a path of
# the BPF file system. BCC has _SHARED/_PUBLIC for BPF_TABLE and BPF_QUEUESTACK; pynetmon also accepts
# them on the shorthand macros (BPF_ARRAY_SHARED, BPF_HASH_PUBLIC, ...).
for _macro in [m for m in _MAP_MACROS if not m.endswith("_PINNED") and m != "BPF_F_TABLE"]:
    for _suffix in ("_SHARED", "_PUBLIC"):
        _MAP_MACROS[_macro + _suffix] = _MAP_MACROS[_macro]
SCOPES = {"_SHARED": "shared", "_PUBLIC": "public", "_PINNED": "pinned"}
_MAP_MACRO_RE = re.compile(r"\b(" + "|".join(sorted(_MAP_MACROS, key=len, reverse=True)) + r")\s*\(")
_METHODS = ("lookup_or_try_init", "lookup_or_init", "atomic_increment", "increment", "lookup", "update", "insert",
            "delete", "push", "pop", "peek")
_HANDLE_RX = re.compile(r"\bhandle_rx\s*\(")
_INCLUDE_UAPI = re.compile(r'(#\s*include\s*[<"])uapi/(linux/[^>"]+[>"])')
_INCLUDE_BCC = re.compile(r'#\s*include\s*[<"]bcc/[^>"]+[>"]')
_PCN_LOG_FMT = re.compile(r'(\bpcn_log\s*\([^,]*,[^,]*,\s*)("(?:[^"\\]|\\.)*")')
_PCN_CONVERSIONS = {"%I": "%x", "%P": "%u", "%M": "%llx"}


@dataclass(frozen=True)
class MapDecl:
    """A map declared with a BCC macro (name, table type, key/value C types, size)."""

    name: str
    type: str
    key: str
    value: str
    size: str
    flags: str
    line: int
    scope: str = "local"  # local, shared, public, pinned or extern: see sharing.py
    pin: str = ""         # the BPF file system path of a _PINNED map


@dataclass(frozen=True)
class Translation:
    """The translation unit handed to clang, and what the translation learnt about the code."""

    source: str
    dialect: str          # "libbpf" or "polycube"
    program: str | None   # the wrapper's program name (Polycube style), else None: pick from the object
    maps: tuple[MapDecl, ...]


def map_declarations(code: str) -> tuple[MapDecl, ...]:
    """The maps Polycube-style `code` declares with BCC macros (none for libbpf-style code)."""
    if detect_dialect(code) == "libbpf":
        return ()
    return tuple(_rewrite(code if code.endswith("\n") else code + "\n", "code")[1])


def detect_dialect(code: str) -> str:
    """'polycube' if the code defines handle_rx() or uses BCC map macros, else 'libbpf'."""
    stripped = _blank(code)
    if _HANDLE_RX.search(stripped) or _MAP_MACRO_RE.search(stripped):
        return "polycube"
    return "libbpf"


def translate(code: str, *, direction: str, hook: str = "tc", origin: str | None = None,
              pcn_log: bool = False) -> Translation:
    """Turn user code into a libbpf-style translation unit for `hook` ("tc" or "xdp").

    `origin` names the code in diagnostics (default "<direction>-path.code"); `pcn_log=True` makes
    pcn_log() write to the trace pipe instead of compiling to nothing.
    """
    if hook not in HOOKS:
        raise ValueError(f"hook must be one of {HOOKS}, not {hook!r}")
    origin = origin or f"{direction}-path.code"
    if not code.endswith("\n"):
        code += "\n"
    if detect_dialect(code) == "libbpf":
        epilogue = "" if _has_license(code) else \
            '#line 1 "<pynetmon license>"\nchar _pynetmon_license[] SEC("license") = "GPL";\n'
        source = f'#line 1 "{origin}"\n{code}{epilogue}'
        return Translation(source, "libbpf", None, ())
    body, maps = _rewrite(code, origin)
    defines = "#define PYNETMON_HOOK_XDP 1\n" if hook == "xdp" else "#define PYNETMON_HOOK_TC 1\n"
    if pcn_log:
        defines += "#define PYNETMON_PCN_LOG 1\n"
    has_handler = bool(_HANDLE_RX.search(_blank(code)))
    program = WRAPPER_PROGRAMS[direction] if has_handler else None
    wrapper = _wrapper(direction, hook) if has_handler else ""
    license_ = "" if _has_license(code) else 'char _pynetmon_license[] SEC("license") = "GPL";\n'
    source = (f"{defines}#include <pynetmon/polycube.h>\n#line 1 \"{origin}\"\n{body}"
              f"#line 1 \"<pynetmon {direction} wrapper>\"\n{wrapper}{license_}")
    return Translation(source, "polycube", program, tuple(maps))


def _has_license(code: str) -> bool:
    return bool(re.search(r'SEC\s*\(\s*"license"\s*\)', code))


def _wrapper(direction: str, hook: str) -> str:
    name = WRAPPER_PROGRAMS[direction]
    if hook == "xdp":
        # A packet that passes goes on to the next XDP program of the interface's chain (slot 0 of
        # pnm_xdp_next, set by pynetmon/link/xdp_chain.py); with none there, the tail call falls through.
        return ("struct {\n    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);\n    __uint(max_entries, 1);\n"
                "    __type(key, __u32);\n    __type(value, __u32);\n} pnm_xdp_next SEC(\".maps\");\n"
                f'SEC("xdp")\nint {name}(struct xdp_md *ctx)\n{{\n'
                "    struct pkt_metadata md = {.in_port = (__u16)ctx->ingress_ifindex,\n"
                "                              .packet_len = (__u32)(ctx->data_end - ctx->data)};\n"
                "    int rc = handle_rx(ctx, &md);\n"
                "    if (rc == RX_DROP || rc == RX_ERROR)\n        return XDP_DROP;\n"
                "    bpf_tail_call(ctx, &pnm_xdp_next, 0);\n"
                "    return XDP_PASS;\n}\n")
    # TC_ACT_UNSPEC rather than TC_ACT_OK: on tcx and clsact it lets the programs attached after this
    # one still run (a monitor must not end the chain); the packet passes either way.
    return (f'SEC("tc")\nint {name}(struct __sk_buff *skb)\n{{\n'
            "    struct pkt_metadata md = {.in_port = (__u16)skb->ifindex, .packet_len = skb->len,\n"
            "                              .traffic_class = skb->priority};\n"
            "    int rc = handle_rx(skb, &md);\n"
            "    return (rc == RX_DROP || rc == RX_ERROR) ? TC_ACT_SHOT : TC_ACT_UNSPEC;\n}\n")


# ---- source rewriting -------------------------------------------------------------------------------

def _split_args(text: str, start: int) -> tuple[list[str], int]:
    """Split the macro arguments that begin after the '(' at `start`; returns (args, index after ')')."""
    depth = 0
    args: list[str] = []
    cur: list[str] = []
    i = start
    while i < len(text):
        c = text[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            if depth == 0:
                args.append("".join(cur).strip())
                return args, i + 1
            depth -= 1
        elif c == "," and depth == 0:
            args.append("".join(cur).strip())
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    raise ValueError("unbalanced parentheses")


def _line_of(code: str, offset: int) -> int:
    return code.count("\n", 0, offset) + 1


def _rewrite(code: str, origin: str) -> tuple[str, list[MapDecl]]:
    """Rewrite map macros, method calls, includes and pcn_log formats; the line count never changes."""
    blank = _blank(code)
    edits: list[tuple[int, int, str]] = []
    maps: list[MapDecl] = []
    problems: list[tuple[str, str]] = []
    for m in _MAP_MACRO_RE.finditer(blank):
        line = _line_of(code, m.start())
        try:
            args, end = _split_args(blank, m.end())
        except ValueError:
            problems.append((f"{origin}:{line}", f"{m.group(1)}(...) is not closed"))
            continue
        try:
            decl = _map_decl(m.group(1), [code[a:b].strip() for a, b in _arg_spans(blank, m.end(), args)], line)
        except ValueError as exc:
            problems.append((f"{origin}:{line}", str(exc)))
            continue
        maps.append(decl)
        newlines = code.count("\n", m.start(), end)
        edits.append((m.start(), end, _map_definition(decl) + "\n" * newlines))
    if problems:
        raise ConfigError(problems)
    names = {d.name for d in maps}
    if names:
        method_re = re.compile(r"\b(" + "|".join(map(re.escape, sorted(names))) + r")\s*\.\s*("
                               + "|".join(_METHODS) + r")\s*\(")
        for m in method_re.finditer(blank):
            if any(a <= m.start() < b for a, b, _ in edits):
                continue
            newlines = m.group(0).count("\n")
            edits.append((m.start(), m.end(), f"pynetmon_{m.group(2)}({m.group(1)}," + "\n" * newlines))
    out = _apply(code, edits)
    # Method calls with no other argument would now end in "(NAME,)": none of BCC's methods has that shape
    # except a malformed call, which clang then reports at the user's line.
    out = _INCLUDE_UAPI.sub(r"\1\2", out)
    out = _INCLUDE_BCC.sub("/* bcc header: provided by <pynetmon/polycube.h> */", out)
    out = _PCN_LOG_FMT.sub(lambda m: m.group(1) + _pcn_format(m.group(2)), out)
    return out, maps


def _arg_spans(blank: str, start: int, args: list[str]) -> list[tuple[int, int]]:
    """Offsets of each top-level argument (so the original text, strings included, can be taken)."""
    spans: list[tuple[int, int]] = []
    depth, begin = 0, start
    i = start
    while len(spans) < len(args):
        c = blank[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            if depth == 0:
                spans.append((begin, i))
                break
            depth -= 1
        elif c == "," and depth == 0:
            spans.append((begin, i))
            begin = i + 1
        i += 1
    return spans


def _apply(code: str, edits: list[tuple[int, int, str]]) -> str:
    edits.sort()
    out, pos = [], 0
    for start, end, text in edits:
        out.append(code[pos:start])
        out.append(text)
        pos = end
    out.append(code[pos:])
    return "".join(out)


def _map_decl(macro: str, args: list[str], line: int) -> MapDecl:
    fixed_type, params = _MAP_MACROS[macro]
    if len(args) > len(params):
        raise ValueError(f"{macro} takes at most {len(params)} arguments ({', '.join(p for p, _ in params)}), "
                         f"got {len(args)}")
    values = {}
    for i, (param, default) in enumerate(params):
        if i < len(args) and args[i]:
            values[param] = args[i]
        elif default is None:
            raise ValueError(f"{macro} needs its {param} argument ({', '.join(p for p, _ in params)})")
        else:
            values[param] = default
    table = fixed_type or values["type"].strip().strip('"')
    scope = next((kind for suffix, kind in SCOPES.items() if macro.endswith(suffix)), "local")
    if table == EXTERN:
        if scope != "local":
            raise ValueError(f'{macro}: "extern" refers to a map defined elsewhere; it cannot be {scope} itself')
        # The placeholder type is replaced by the defining map's when the path is loaded (sharing.py).
        scope, table = EXTERN, "hash" if "key" in values else "queue"
    if table == "histogram":
        table = "array" if values["key"] in _INT_KEYS else "hash"
        values["value"] = "u64"
    if "key" not in values and table not in _KEYLESS:
        values["key"] = "int"  # BPF_ARRAY and BPF_PERCPU_ARRAY: arrays are indexed by a 32-bit int
    if table not in _MAP_TYPES:
        raise ValueError(f"{macro}: map type {table!r} is not supported; supported: {', '.join(sorted(_MAP_TYPES))}")
    if not re.fullmatch(r"[A-Za-z_]\w*", values["name"]):
        raise ValueError(f"{macro}: {values['name']!r} is not a valid map name")
    # An LPM trie cannot be preallocated: the kernel refuses one without BPF_F_NO_PREALLOC.
    flags = values.get("flags", "BPF_F_NO_PREALLOC" if table == "lpm_trie" else "0")
    pin = ""
    if scope == "pinned":
        pin = values["pinned"].strip()
        if not re.fullmatch(r'"[^"\\]*"', pin):
            raise ValueError(f"{macro}: the pin path must be a string literal, not {pin!r}")
        pin = pin[1:-1]
    return MapDecl(values["name"], table, values.get("key", ""), values["value"], values["size"], flags, line,
                   scope, pin)


def _map_definition(decl: MapDecl) -> str:
    if decl.type in _KEYLESS:
        return f"PYNETMON_KEYLESS_MAP({_MAP_TYPES[decl.type]}, {decl.value}, {decl.name}, ({decl.size}))"
    return (f"PYNETMON_MAP({_MAP_TYPES[decl.type]}, {decl.key}, {decl.value}, {decl.name}, ({decl.size}), "
            f"({decl.flags}))")


def _pcn_format(literal: str) -> str:
    for polycube, printk in _PCN_CONVERSIONS.items():
        literal = literal.replace(polycube, printk)
    return literal


__all__ = ["EXTERN", "HOOKS", "WRAPPER_PROGRAMS", "MapDecl", "Translation", "detect_dialect", "map_declarations",
           "translate"]
