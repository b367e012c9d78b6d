// evals view: the little behaviour the pages need. Served from the package; no build step.
// The CSP forbids inline scripts and handlers, so everything is wired here. Text from the
// stores is only ever set with textContent, never parsed as HTML.
"use strict";

(function () {
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form && select.form.submit());
  }
  const waterfall = document.querySelector("table.waterfall");
  if (waterfall) {
    setUpWaterfall(waterfall);
  }

  function setUpWaterfall(table) {
    const traceId = table.dataset.trace;
    const rows = Array.from(table.tBodies[0].rows);
    const depth = rows.map((row) => Number(row.dataset.depth));
    const position = new Map(rows.map((row, i) => [row, i]));
    const panel = document.getElementById("span-detail");
    let selected = null;

    function setCollapsed(row, collapsed) {
      const button = row.querySelector("button.tog");
      if (!button) return;
      button.setAttribute("aria-expanded", collapsed ? "false" : "true");
      button.textContent = collapsed ? "▸" : "▾";
    }

    function isCollapsed(row) {
      const button = row.querySelector("button.tog");
      return button !== null && button.getAttribute("aria-expanded") === "false";
    }

    // Show or hide the descendants of row i, keeping collapsed subtrees collapsed.
    function refresh(i) {
      const base = depth[i];
      let hideBelow = isCollapsed(rows[i]) ? base : Infinity;
      for (let j = i + 1; j < rows.length && depth[j] > base; j++) {
        if (depth[j] <= hideBelow) hideBelow = Infinity;
        const hidden = depth[j] > hideBelow;
        rows[j].classList.toggle("hidden", hidden);
        if (!hidden && isCollapsed(rows[j])) hideBelow = depth[j];
      }
    }

    function setAll(collapsed) {
      rows.forEach((row) => setCollapsed(row, collapsed));
      rows.forEach((row, i) => row.classList.toggle("hidden", collapsed && depth[i] > 0));
      if (collapsed) rows.forEach((row, i) => depth[i] === 0 && setCollapsed(row, true));
    }

    table.addEventListener("click", (event) => {
      const row = event.target.closest("tr");
      if (!row || !position.has(row)) return;
      if (event.target.closest("button.tog")) {
        setCollapsed(row, !isCollapsed(row));
        refresh(position.get(row));
        return;
      }
      select(row);
    });

    const expand = document.querySelector("[data-expand-all]");
    const collapse = document.querySelector("[data-collapse-all]");
    if (expand) expand.addEventListener("click", () => setAll(false));
    if (collapse) collapse.addEventListener("click", () => setAll(true));

    async function select(row) {
      if (selected) selected.classList.remove("sel");
      selected = row;
      row.classList.add("sel");
      const spanId = row.id.slice(2);
      history.replaceState(null, "", "#" + row.id);
      panel.replaceChildren(element("p", "muted", "loading…"));
      let detail;
      try {
        const url = "/api/traces/" + encodeURIComponent(traceId) + "/spans/" + encodeURIComponent(spanId);
        const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (!response.ok) throw new Error("HTTP " + response.status);
        detail = await response.json();
      } catch (error) {
        panel.replaceChildren(element("p", "bad", "could not load the span: " + error.message));
        return;
      }
      if (selected === row) renderDetail(detail);
    }

    function renderDetail(span) {
      const parts = [element("h2", "", span.name)];
      parts.push(kvTable([
        ["span id", span.span_id],
        ["kind", [span.span_kind, span.kind].filter(Boolean).join(" · ")],
        ["status", span.status + (span.status_message ? ": " + span.status_message : "")],
        ["duration", span.duration_ms.toFixed(2) + " ms"],
        ["model", span.model],
        ["tokens", span.input_tokens == null && span.output_tokens == null ? null
          : (span.input_tokens ?? "–") + " in / " + (span.output_tokens ?? "–") + " out"],
        ["cost", span.cost_usd == null ? null : "$" + span.cost_usd.toFixed(6)],
        ["scope", span.scope],
      ]));
      parts.push(element("h3", "", "Attributes"));
      parts.push(kvTable(Object.entries(span.attributes), true));
      if (span.events.length) {
        parts.push(element("h3", "", "Events"));
        for (const event of span.events) {
          parts.push(element("div", "strong", event.name));
          parts.push(kvTable(Object.entries(event.attributes || {}), true));
        }
      }
      if (span.links.length) {
        parts.push(element("h3", "", "Links"));
        parts.push(element("pre", "text", JSON.stringify(span.links, null, 2)));
      }
      const resource = document.createElement("details");
      resource.append(element("summary", "", "resource"), kvTable(Object.entries(span.resource), true));
      parts.push(resource);
      panel.replaceChildren(...parts);
    }

    const initial = location.hash.startsWith("#s-") ? document.getElementById(location.hash.slice(1)) : null;
    if (initial && position.has(initial)) {
      select(initial);
      initial.scrollIntoView({ block: "center" });
    }
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function display(value) {
    if (typeof value === "string") {
      const trimmed = value.trim();
      if ((trimmed.startsWith("{") || trimmed.startsWith("[")) && trimmed.length < 200000) {
        try {
          return JSON.stringify(JSON.parse(trimmed), null, 2);
        } catch (error) {
          return value;
        }
      }
      return value;
    }
    return JSON.stringify(value, null, 2);
  }

  // Key/value pairs as a definition list: the key above its value (the panel is narrow).
  function kvTable(entries, preformatted) {
    const list = element("dl", "attrs");
    for (const [key, value] of entries) {
      if (value === null || value === undefined || value === "") continue;
      const term = element("dt", "", key);
      const definition = element("dd");
      definition.append(preformatted ? element("pre", "text", display(value)) : document.createTextNode(String(value)));
      list.append(term, definition);
    }
    if (!list.childElementCount) return element("p", "muted", "none");
    return list;
  }
})();
