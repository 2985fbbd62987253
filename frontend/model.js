// What the model is, on the page: its card (data, licences, reported figures, each class in
// words) and a form for the patient fields its schema asks for.
(() => {
  "use strict";

  function fieldLabel(name) {
    const words = name.replace(/_/g, " ");
    return words.charAt(0).toUpperCase() + words.slice(1);
  }

  function schemaFields(schema) {
    const items = Array.isArray(schema) ? schema : [schema];
    return items.flatMap((item) => item.fields);
  }

  // One input per field of the model's schema, its range and default from the schema.
  function buildPatientForm(container, schema, onChange) {
    const rows = schemaFields(schema).map((field) => {
      const label = document.createElement("label");
      label.className = "field";
      const title = document.createElement("span");
      title.textContent = fieldLabel(field.name);
      let input;
      if (field.type === "categorical") {
        input = document.createElement("select");
        const required = field.default === null || field.default === undefined;
        if (required) input.append(new Option("choose…", ""));
        for (const category of field.categories) {
          input.append(new Option(category, category, false, category === field.default));
        }
      } else {
        input = document.createElement("input");
        input.type = "number";
        input.step = "any";
        input.inputMode = "decimal";
        if (field.min !== null && field.min !== undefined) input.min = String(field.min);
        if (field.max !== null && field.max !== undefined) input.max = String(field.max);
        const optional = field.missing && field.missing.fill !== null;
        input.placeholder = optional ? "unknown" : "required";
      }
      input.name = field.name;
      input.dataset.field = field.name;
      input.addEventListener("change", onChange);
      label.append(title, input);
      return label;
    });
    container.replaceChildren(...rows);
  }

  // Only what the user gave: an empty field is missing, and the model's schema fills it.
  function patientValues(container) {
    const values = {};
    for (const input of container.querySelectorAll("[data-field]")) {
      if (input.value !== "") values[input.dataset.field] = input.value;
    }
    return values;
  }

  // The model card the exporter was given: what the model is, its data and licences, what
  // its authors measured, and each class in words.
  function renderCard(card, labels, percent) {
    if (!card) return;
    const text = (id, value) => {
      const node = document.getElementById(id);
      node.textContent = value || "—";
      node.hidden = false;
    };
    text("card-summary", card.title ? `${card.title}. ${card.summary || ""}` : card.summary);
    const source = card.source || {};
    text("card-source", [source.package, source.version].filter(Boolean).join(" ") +
      (source.author ? ` by ${source.author}` : ""));
    text("card-licence", card.licence);
    const data = card.training_data || {};
    text("card-data", data.name ? `${data.name} (${[data.licence, data.use].filter(Boolean).join(": ")})` : "");
    text("card-use", card.intended_use);
    const reported = card.reported || {};
    text("card-reported", reported.accuracy !== undefined
      ? `accuracy ${percent(reported.accuracy)} on ${reported.test_images} test images (${reported.by})`
      : "");
    const malignant = new Set(card.malignant || []);
    const rows = (labels || []).flatMap((label) => {
      const term = document.createElement("dt");
      term.textContent = label.name + (malignant.has(label.code) ? " (malignant)" : "");
      const description = document.createElement("dd");
      description.textContent = label.description || label.code;
      return [term, description];
    });
    document.getElementById("card-classes").replaceChildren(...rows);
    document.getElementById("model-card").hidden = false;
  }

  window.DermcamModel = { buildPatientForm, patientValues, renderCard };
})();
