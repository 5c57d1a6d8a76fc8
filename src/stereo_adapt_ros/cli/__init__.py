"""The ``stereo-adapt`` command line (and the node's entry point).

Every entry point passes through here before torch is imported, which is the only moment
OpenMP's wait policy can be chosen. OpenMP's default lets torch's idle threads spin between
operations; on a machine shared with any other busy process (another node, the proxy matcher,
a training run) the spinning threads fight for the cores, and an adaptation step that takes
0.24 s took 9 s on this project's 2-core machine. Passive waiting avoids that (see
docs/performance.md for its cost on an idle machine); a value the user sets wins.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
