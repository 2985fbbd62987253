// Firebase App Check, when the deployment requires it (deploy.sh --appcheck): the page
// attests itself and sends the short-lived token App Check returns with every upload, in
// X-Firebase-AppCheck. No SDK: App Check's REST exchange, as the SDK calls it.
//   production: reCAPTCHA Enterprise's token → :exchangeRecaptchaEnterpriseToken
//   a debug token registered for the app (Firebase console, App Check, "Manage debug
//   tokens") → :exchangeDebugToken: given by make run APPCHECK=1 (devstack/appcheck.py), or set
//   by a test browser as self.FIREBASE_APPCHECK_DEBUG_TOKEN before the page loads (what the JS
//   SDK reads, make deploy-local). Never in a published config.js: anyone could read it.
// A token is reused until a minute before it expires.
(() => {
  "use strict";

  const SERVICE = "https://firebaseappcheck.googleapis.com";
  let cached = null; // {token, expires}
  let recaptcha = null;

  function loadRecaptcha(siteKey) {
    recaptcha =
      recaptcha ||
      new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = `https://www.google.com/recaptcha/enterprise.js?render=${encodeURIComponent(siteKey)}`;
        script.onload = () => window.grecaptcha.enterprise.ready(resolve);
        script.onerror = () => reject(new Error("The page could not load its attestation."));
        document.head.appendChild(script);
      });
    return recaptcha;
  }

  async function attestation(config) {
    const debugToken =
      config.debugToken ||
      (typeof self.FIREBASE_APPCHECK_DEBUG_TOKEN === "string" && self.FIREBASE_APPCHECK_DEBUG_TOKEN);
    if (debugToken) return ["exchangeDebugToken", { debugToken }];
    await loadRecaptcha(config.siteKey);
    const token = await window.grecaptcha.enterprise.execute(config.siteKey, { action: "upload" });
    return ["exchangeRecaptchaEnterpriseToken", { recaptchaEnterpriseToken: token }];
  }

  // The token to send, or null when the deployment has no App Check.
  async function token() {
    const config = (window.DERMCAM_CONFIG || {}).appCheck;
    if (!config) return null;
    if (cached && cached.expires - Date.now() > 60_000) return cached.token;
    const [method, body] = await attestation(config);
    const base = config.exchangeUrl || SERVICE;
    const url =
      `${base}/v1/projects/${config.projectNumber}/apps/${config.appId}:${method}` +
      `?key=${encodeURIComponent(config.apiKey)}`;
    let answer;
    try {
      answer = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
    } catch (err) {
      throw new Error("The page could not attest itself. Check the connection and try again.");
    }
    const exchanged = await answer.json().catch(() => null);
    if (!answer.ok || !exchanged || !exchanged.token) {
      throw new Error("The page could not attest itself to the service; reload and try again.");
    }
    cached = { token: exchanged.token, expires: Date.now() + parseFloat(exchanged.ttl) * 1000 };
    return cached.token;
  }

  window.DermcamAppCheck = { token };
})();
