"""The functions stay TensorFlow-free: requirements and imports."""

import subprocess
import sys

from conftest import ROOT


def test_function_requirements_have_no_tensorflow():
    for fn in ("predict", "gradcam"):
        lines = (ROOT / "functions" / fn / "requirements.txt").read_text().lower().splitlines()
        packages = [
            line.split("==")[0].strip() for line in lines if line and not line.startswith("#")
        ]
        assert packages, fn
        assert not [p for p in packages if p.startswith(("tensorflow", "keras", "tf-", "tf_"))]
        assert all("==" in line for line in lines if line and not line.startswith("#")), (
            "pin versions"
        )


def test_core_imports_without_tensorflow():
    code = (
        "import sys, dermcam.config, dermcam.imaging, dermcam.engine, dermcam.cam, "
        "dermcam.manifest, dermcam.http, dermcam.service, dermcam.storage\n"
        "heavy = [m for m in sys.modules if m.startswith(('tensorflow', 'keras'))]\n"
        "assert not heavy, heavy[:5]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
