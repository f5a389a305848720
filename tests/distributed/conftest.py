import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # the worker scripts and _launch.py, _tiny.py

# worker scripts run under torchrun; --doctest-modules must not import them (ds_worker needs DeepSpeed)
collect_ignore = ["ddp_worker.py", "ds_worker.py", "trainer_worker.py", "teardown_worker.py"]
