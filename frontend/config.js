// Where the page finds the functions. `make run` serves its own copy of this file with the
// local ports; deploy.sh writes the deployed function URLs here. An empty gradcamUrl runs
// the page in predict-only mode.
window.DERMCAM_CONFIG = {
  predictUrl: "http://127.0.0.1:8081",
  gradcamUrl: "http://127.0.0.1:8082",
};
