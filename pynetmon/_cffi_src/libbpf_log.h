/* libbpf's messages to Python's logging (declared to cffi in libbpf.py). */
#ifndef PYNETMON_LIBBPF_LOG_H
#define PYNETMON_LIBBPF_LOG_H

/* Python's side: an extern "Python+C" callback of the cffi module (pynetmon/_binding.py). */
void _pynetmon_libbpf_log(int level, const char *msg);
/* Route every libbpf message, formatted, to _pynetmon_libbpf_log. */
void pynetmon_install_print(void);

#endif
