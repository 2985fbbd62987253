"""Cloud Function `predict`: a skin-lesion image in, every class's probability out.

POST the image (multipart field `image`, a raw image/jpeg|png|webp body, or JSON
{"image": "<base64>"}) and the model's patient-metadata fields if it takes any; GET
?warmup=1 loads the model and reports memory; GET ?model=1 describes the model (labels,
methods, metadata fields). The model is loaded once per instance, on first use, and only its
predict artifact.
"""

import flask
import functions_framework

from dermcam import http, service
from dermcam.cache import ModelCache
from dermcam.config import load_settings
from dermcam.gate import Gate

SETTINGS = load_settings()
GATE = Gate(SETTINGS)
MODEL = ModelCache(SETTINGS, artifacts=("predict",))


@functions_framework.http
def predict(request: flask.Request) -> flask.Response:
    """Rank every class for one image."""
    return http.serve(
        request,
        SETTINGS,
        "predict",
        lambda req: service.predict(MODEL, req, SETTINGS),
        MODEL,
        GATE,
    )
