"""Which programs of an eBPF object are tail-call targets: the functions a statically initialised
program array names (libbpf's `__array(values, ...)` with `.values = { [i] = &prog }`).

libbpf fills such arrays when the object loads, but only with programs that load; and the entry program of
a path is the one program of its type that no array names. libbpf keeps the initialisers private, so they
are read here from the ELF object: the relocations of the `.maps` section that point at functions.
"""
from __future__ import annotations

import struct

__all__ = ["tail_call_targets"]

_SHT_REL = 9
_STT_FUNC = 2


def tail_call_targets(image: bytes) -> frozenset[str]:
    """The names of the programs that the object's program arrays are initialised with (empty when the
    image is not a 64-bit ELF object or has no initialised program array)."""
    if len(image) < 64 or image[:4] != b"\x7fELF" or image[4] != 2:
        return frozenset()
    end = "<" if image[5] == 1 else ">"
    try:
        shoff, = struct.unpack_from(end + "Q", image, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", image, 0x3A)
        sections = [struct.unpack_from(end + "IIQQQQIIQQ", image, shoff + i * shentsize) for i in range(shnum)]
        names = sections[shstrndx]

        def text(table: tuple, offset: int) -> str:
            start = table[4] + offset
            return image[start:image.index(b"\0", start)].decode("utf-8", "replace")

        maps = [i for i, s in enumerate(sections) if text(names, s[0]) == ".maps"]
        targets = set()
        for rel in sections:
            if rel[1] != _SHT_REL or rel[7] not in maps:
                continue
            symtab = sections[rel[6]]
            strtab = sections[symtab[6]]
            for off in range(rel[4], rel[4] + rel[5], 16):
                _, info = struct.unpack_from(end + "QQ", image, off)
                st_name, st_info = struct.unpack_from(end + "IB", image, symtab[4] + (info >> 32) * 24)
                if st_info & 0xF == _STT_FUNC:
                    targets.add(text(strtab, st_name))
        return frozenset(targets)
    except (struct.error, IndexError, ValueError, OverflowError):
        return frozenset()  # not an object libbpf would open either: its own error says why
