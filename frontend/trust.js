// What the answer may claim, in words: the referral decision first, then the prediction set
// and whether the percentages are calibrated. Never "benign", never "nothing to worry
// about": below a threshold means only that the score did not reach it.
(() => {
  "use strict";

  const pct = (p) => `${Math.round(p * 100)} %`;

  function namesOf(codes, predictions) {
    return codes.map((code) => (predictions.find((p) => p.code === code) || { name: code }).name);
  }

  function decisionText(decision, predictions) {
    const checks = decision.checks || [];
    if (decision.refer) {
      const check = checks.find((c) => c.concern === decision.because) || checks[0];
      const what = namesOf(check.classes, predictions).join(" or ");
      const caught = check.measured && check.measured.sensitivity;
      return {
        refer: true,
        headline: "Refer: have a clinician examine this lesion.",
        detail: `The score for ${what} reached the threshold set to catch ` +
          `${pct(check.target_sensitivity)} of them` +
          (caught ? ` (on held-out photographs it caught ${pct(caught)}).` : "."),
      };
    }
    const what = checks.map((c) => namesOf(c.classes, predictions).join(" or ")).join("; ");
    const missed = checks.map((c) => c.measured && c.measured.sensitivity)
      .filter((s) => typeof s === "number");
    return {
      refer: false,
      headline: "Not flagged for referral at this operating point.",
      detail: `No score reached its threshold (${what}). These thresholds still miss some ` +
        (missed.length ? `(about ${pct(1 - Math.min(...missed))} on held-out photographs) ` : "") +
        "and this is not a diagnosis: a lesion that changes, bleeds or worries the patient " +
        "should be seen by a clinician.",
    };
  }

  // body: a predict or gradcam answer. Returns the elements to show above the ranking.
  function render(body) {
    const parts = [];
    if (body.decision) {
      const said = decisionText(body.decision, body.predictions);
      const box = document.createElement("div");
      box.className = said.refer ? "decision refer" : "decision";
      box.dataset.refer = String(said.refer);
      const head = document.createElement("strong");
      head.textContent = said.headline;
      const detail = document.createElement("p");
      detail.textContent = said.detail;
      box.append(head, detail);
      parts.push(box);
    }
    if (body.prediction_set) {
      const set = document.createElement("p");
      set.className = "prediction-set";
      const names = namesOf(body.prediction_set.classes, body.predictions);
      set.textContent = (names.length === 1 ? "Most likely: " : "One of: ") + names.join(", ") +
        ` (a set that holds the true class for ${pct(body.prediction_set.coverage)} of ` +
        "photographs like the calibration set).";
      parts.push(set);
    }
    const line = document.createElement("p");
    line.className = "calibration note";
    line.textContent = body.calibrated
      ? "Percentages are calibrated on labelled photographs; they hold for photographs like those."
      : "This model is not calibrated: the percentages are its own scores, a ranking rather " +
        "than chances, and it gives no referral decision.";
    parts.push(line);
    return parts;
  }

  window.DermcamTrust = { render };
})();
