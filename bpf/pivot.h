/* SPDX-License-Identifier: GPL-2.0 */
/* Shared between bpf/pivot.bpf.c and pynetmon/swap/dataplane.py. */
#ifndef PYNETMON_PIVOT_H
#define PYNETMON_PIVOT_H

/* Two instances of the user's code: the active one receives packets, the other is read. */
#define PIVOT_SLOTS 2

#endif
