"""One intra-op thread for the whole test session, set before torch loads: two fresh runs compared for
equality must use the same thread count (a run otherwise takes the cores free when it starts; see
README, Threads), and on a 2-core CI machine one thread per test process is also the fastest."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
