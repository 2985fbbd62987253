"""What a Dataflow worker needs, and where it goes: dermcam's core and the evaluation code as a
package built from a setup.py made here (`--setup_file`; no TensorFlow, the Keras modules left
out, as deploy.sh stages a function), its pinned requirements as that package's own, and the
model's artifacts copied to `<temp-location>/dermcam-models/`. And what a run costs there.

Prices: "Dataflow pricing", https://cloud.google.com/dataflow/pricing, batch workers,
us-central1; looked up 2026-11-29 through this project's search tool, whose stored copy of the
page did not render its table: these are Dataflow's long-standing published list prices for
batch vCPU, memory and standard persistent disk. Check the page before budgeting.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions

from model_store.evaluation.folder import gcs_location

ROOT = Path(__file__).resolve().parents[2]
PRICE_VCPU_HOUR = 0.056
PRICE_GB_HOUR = 0.003557
PRICE_PD_GB_HOUR = 0.000054
MACHINES = {"n2-standard-2": (2, 8.0), "n2-standard-4": (4, 16.0), "e2-standard-2": (2, 8.0)}
DISK_GB = 25  # a batch worker's boot disk with Dataflow Shuffle
# The worker's own requirements: what dermcam's core and the evaluation need besides the Beam
# SDK the Dataflow container already has. No TensorFlow.
WORKER_REQUIREMENTS = [
    "ai-edge-litert==2.3.0",
    "numpy==2.4.6",
    "pillow==12.3.0",
    "simplejpeg==1.9.0",
]
SETUP = """from setuptools import find_packages, setup

setup(
    name="dermcam-archive",
    version="1",
    packages=find_packages(),
    install_requires={requirements!r},
)
"""


def worker_package(into: Path) -> Path:
    """A folder with setup.py and the packages a worker imports; its setup.py path."""
    into.mkdir(parents=True, exist_ok=True)
    shutil.copytree(
        ROOT / "shared" / "dermcam",
        into / "dermcam",
        ignore=shutil.ignore_patterns("keras_*.py", "__pycache__"),
    )
    store = into / "model_store"
    store.mkdir()
    (store / "__init__.py").write_text("")
    for room in ("evaluation", "archive", "synthetic"):
        shutil.copytree(
            ROOT / "model_store" / room, store / room, ignore=shutil.ignore_patterns("__pycache__")
        )
    (into / "setup.py").write_text(SETUP.format(requirements=WORKER_REQUIREMENTS))
    return into / "setup.py"


def upload_model(model_dir: Path, temp_location: str) -> str:
    """The artifacts and manifest at `<temp_location>/dermcam-models/<name>-<digest>/`."""
    files = sorted(p for p in model_dir.iterdir() if p.suffix in (".tflite", ".json"))
    digest = hashlib.sha256(b"".join(p.read_bytes()[: 1 << 20] for p in files)).hexdigest()[:12]
    target = f"{temp_location.rstrip('/')}/dermcam-models/{model_dir.parent.name}-{digest}"
    client, bucket, prefix = gcs_location(target)
    for path in files:
        client.bucket(bucket).blob(f"{prefix}/{path.name}").upload_from_filename(str(path))
    return target


def dataflow_options(args, job_name: str) -> PipelineOptions:  # noqa: ANN001
    """The job's options, its worker package built."""
    setup_file = worker_package(scratch())
    options = {
        "runner": "DataflowRunner",
        "project": args.project,
        "region": args.region,
        "temp_location": args.temp_location,
        "staging_location": f"{args.temp_location.rstrip('/')}/staging",
        "job_name": job_name,
        "setup_file": str(setup_file),
        "max_num_workers": args.max_workers,
        "machine_type": args.machine_type,
        "save_main_session": False,
    }
    if args.dataflow_endpoint:  # the local rehearsal: its cloud at localhost, no credentials
        options["dataflow_endpoint"] = args.dataflow_endpoint
        options["no_auth"] = True
    # flags=[]: Beam would otherwise read this command's own arguments (--labels ...)
    return PipelineOptions(flags=[], **options)


def cost_per_10000(cpu_seconds_per_image: float, machine: str = "n2-standard-2") -> dict:
    """US dollars for 10,000 images at the measured CPU per image, workers kept busy."""
    vcpus, memory_gb = MACHINES.get(machine, (2, 8.0))
    vcpu_hours = cpu_seconds_per_image * 10_000 / 3600
    worker_hours = vcpu_hours / vcpus
    dollars = (
        vcpu_hours * PRICE_VCPU_HOUR
        + worker_hours * memory_gb * PRICE_GB_HOUR
        + worker_hours * DISK_GB * PRICE_PD_GB_HOUR
    )
    return {"vcpu_hours": round(vcpu_hours, 2), "machine": machine, "usd": round(dollars, 2)}


def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="dermcam-worker-package-"))
