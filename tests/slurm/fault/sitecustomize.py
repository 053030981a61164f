"""Fault injection for tests/test_slurm.py, outside the product.

With this directory on PYTHONPATH, any Python process whose command line contains the
text in ``SCALSELECT_FAULT_MATCH`` writes a message and exits with status 3, as a job
that crashes would. Unset the variable (the fault "removed") and nothing happens.
"""

import os
import sys

_MATCH = os.environ.get("SCALSELECT_FAULT_MATCH")
if _MATCH:
    with open("/proc/self/cmdline", "rb") as _file:
        _COMMAND = _file.read().replace(b"\0", b" ").decode(errors="replace")
    if _MATCH in _COMMAND:
        sys.stderr.write(f"injected fault: this process matched {_MATCH!r}\n")
        sys.stderr.flush()
        os._exit(3)
