"""dermcam serving core: shared by the predict and gradcam Cloud Functions.

Nothing here imports TensorFlow at module level; only `keras_engine` does, and it is
imported lazily when the reference engine is asked for.
"""

import os as _os

# One BLAS thread. A function instance has a fraction of a vCPU, and OpenBLAS starts a thread
# per visible core when NumPy loads: 55 ms of CPU at every cold start on 2 cores (measured),
# more on a cloud host with many. Set before any dermcam module imports NumPy.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
