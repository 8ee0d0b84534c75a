"""cffi declarations of cpuhop.h: the helper threads of swap-on-read's cpu-hop wait (pynetmon/swap/quiesce.py).
The C, and why it is native threads, is in cpuhop.c."""

INCLUDES = """
#include "cpuhop.h"
"""

TYPES = """
typedef struct pynetmon_hop pynetmon_hop;
"""

FUNCTIONS = """
pynetmon_hop *pynetmon_hop_new(const int *cpus, int count, int fifo_priority, int *error);
int pynetmon_hop_run(pynetmon_hop *hop, long long timeout_ns);
int pynetmon_hop_realtime(pynetmon_hop *hop);
void pynetmon_hop_free(pynetmon_hop *hop);
"""

CUSTOMIZATIONS = ""
SOURCES = ["cpuhop.c"]
