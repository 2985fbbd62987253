// Calls to the functions: the model's description, and uploads with their progress.
(() => {
  "use strict";

  const UNREACHABLE = "The service could not be reached. Check the connection and try again.";

  function errorOf(status, body) {
    const message = body && body.error && body.error.message;
    const error = new Error(message || `The service answered with status ${status}.`);
    if (body && body.abstain) error.abstain = body.abstain; // declined: no diagnosis, and why
    return error;
  }

  // GET ?model=1: labels, methods and the patient-metadata fields the model takes.
  async function describe(url) {
    let response;
    try {
      response = await fetch(`${url}?model=1`);
    } catch (err) {
      throw new Error(UNREACHABLE);
    }
    const body = await response.json().catch(() => null);
    if (!response.ok) throw errorOf(response.status, body);
    return body;
  }

  // POST the photo and fields as multipart, with the App Check token where the deployment
  // asks for one. `onProgress(stage, fraction)` hears "upload" (0–1) while the bytes go up
  // and "waiting" once they are all sent. XMLHttpRequest, not fetch: fetch reports no upload
  // progress.
  async function post(url, photo, fields, onProgress = () => {}) {
    const token = await window.DermcamAppCheck.token();
    const form = new FormData();
    form.append("image", photo.blob, photo.name);
    for (const [key, value] of Object.entries(fields)) form.append(key, value);
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      if (token) xhr.setRequestHeader("X-Firebase-AppCheck", token);
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable) onProgress("upload", event.loaded / event.total);
      };
      xhr.upload.onload = () => onProgress("waiting", 1);
      xhr.onerror = () => reject(new Error(UNREACHABLE));
      xhr.onload = () => {
        let body = null;
        try {
          body = JSON.parse(xhr.responseText);
        } catch (err) {
          body = null;
        }
        if (xhr.status >= 200 && xhr.status < 300 && body) resolve(body);
        else reject(errorOf(xhr.status, body));
      };
      xhr.send(form);
    });
  }

  window.DermcamApi = { describe, post };
})();
