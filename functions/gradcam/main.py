"""Cloud Function `gradcam`: where the model looked, for the class asked (default: the top).

POST the image as for `predict`, with optional `class` (code or index) and `method`
(`gradcam`, `gradcam++`), and the model's patient-metadata fields if it takes any, as form
fields, JSON fields or query arguments. The heatmap PNG is stored in the private bucket under
a content-addressed key and answered as a signed URL (or inline when storage fails).
GET ?warmup=1 loads the model and reports memory; GET ?model=1 describes the model.
"""

import flask
import functions_framework

from dermcam import http, service
from dermcam.cache import ModelCache
from dermcam.config import load_settings
from dermcam.gate import Gate
from dermcam.storage import HeatmapStore

SETTINGS = load_settings()
GATE = Gate(SETTINGS)
STORE = HeatmapStore(SETTINGS)
MODEL = ModelCache(SETTINGS, artifacts=("gradcam",), warm_also=(STORE.prepare,))


@functions_framework.http
def gradcam(request: flask.Request) -> flask.Response:
    """Explain one image's class with a heatmap."""
    return http.serve(
        request,
        SETTINGS,
        "gradcam",
        lambda req: service.gradcam(MODEL, STORE, req, SETTINGS),
        MODEL,
        GATE,
    )
