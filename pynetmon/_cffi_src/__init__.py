"""cffi declarations, one module per C header; listed in order by ../../cffi_build.py."""
