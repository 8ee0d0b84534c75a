/* libbpf's messages to Python's logging: see libbpf_log.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE  /* vasprintf */
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <bpf/libbpf.h>

#include "libbpf_log.h"

static int pynetmon_print(enum libbpf_print_level level, const char *fmt, va_list args)
{
    char *msg = NULL;
    if (vasprintf(&msg, fmt, args) < 0 || msg == NULL)
        return 0;
    _pynetmon_libbpf_log((int)level, msg);
    free(msg);
    return 0;
}

void pynetmon_install_print(void)
{
    libbpf_set_print(pynetmon_print);
}
