// The web leaderboard's script. Data comes inline (#harness-data, written by harness/report/site.py);
// charts are drawn by plotly, inlined beside this script. Nothing is fetched.
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("harness-data").textContent);

  function records(table) {
    const cols = table.columns;
    return table.data.map((row) => {
      const o = {};
      cols.forEach((c, i) => { o[c] = row[i]; });
      return o;
    });
  }
  const ROWS = records(DATA.rows);
  const SERVING = records(DATA.serving);
  const POINTS = records(DATA.history.points);
  const REGRESSIONS = records(DATA.history.regressions);
  const RUNS = DATA.runs;

  // --- formatting -------------------------------------------------------------------------------
  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "—";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v) && Math.abs(v) < 1e6) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3);
    return String(parseFloat(v.toPrecision(4)));
  }
  function fmtCount(v) {
    // parameter counts as people say them: 8M, 1.3B
    if (v === null || v === undefined) return "—";
    for (const [d, u] of [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "k"]]) {
      if (Math.abs(v) >= d) return String(parseFloat((v / d).toPrecision(3))) + u;
    }
    return String(v);
  }
  function starText(n) {
    if (n === null || n === undefined) return "not rated";
    return "★".repeat(n) + "☆".repeat(5 - n);
  }
  function el(tag, attrs, children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") e.textContent = v;
      else if (k === "class") e.className = v;
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children || []) e.append(c);
    return e;
  }
  const $ = (id) => document.getElementById(id);

  // --- columns ----------------------------------------------------------------------------------
  const BOARD_COLUMNS = [
    { key: "rank", label: "#", sort: false },
    { key: "model", label: "Model", text: true },
    { key: "check", label: "Check", text: true },
    { key: "best_setup", label: "Best setup (variant / hardware)", text: true },
    { key: "params", label: "Parameters" },
    { key: "stars", label: "Stars (1–5)" },
    { key: "accuracy", label: "Accuracy (fraction)" },
    { key: "energy_per_query_j", label: "Energy per query (J)" },
    { key: "energy_per_token_j", label: "Energy per token (J)" },
    { key: "wh_per_1000_queries", label: "Energy per 1,000 queries (Wh)" },
    { key: "tokens_per_s", label: "Throughput (tokens/s)" },
    { key: "ttft_s", label: "TTFT (s)" },
    { key: "latency_p90_s", label: "p90 latency (s)" },
    { key: "batch_size", label: "Batch size" },
    { key: "engine", label: "Engine", text: true },
    { key: "energy_method", label: "Energy method", text: true },
    { key: "n_setups", label: "Setups meeting filters" },
  ];
  const SETUP_COLUMNS = [
    { key: "variant", label: "Variant", text: true },
    { key: "check", label: "Check", text: true },
    { key: "hardware", label: "Hardware", text: true },
    { key: "device_name", label: "Device", text: true },
    { key: "engine", label: "Engine", text: true },
    { key: "quantization", label: "Quantization", text: true },
    { key: "energy_method", label: "Energy method", text: true },
    { key: "stars", label: "Stars (1–5)" },
    { key: "accuracy", label: "Accuracy (fraction)" },
    { key: "energy_per_query_j", label: "Energy per query (J)" },
    { key: "energy_per_token_j", label: "Energy per token (J)" },
    { key: "tokens_per_s", label: "Throughput (tokens/s)" },
    { key: "ttft_s", label: "TTFT (s)" },
    { key: "latency_p90_s", label: "p90 latency (s)" },
    { key: "batch_size", label: "Batch size" },
    { key: "energy_to_train_j", label: "Energy to train (J)" },
    { key: "co2e_g_per_1000_queries", label: "CO2e per 1,000 queries (g)" },
    { key: "run_id", label: "Run", text: true },
  ];

  // --- state ------------------------------------------------------------------------------------
  const methods = [...new Set(ROWS.map((r) => r.energy_method).filter(Boolean))].sort();
  const state = {
    method: methods.includes("measured") ? "measured" : methods[0] || "",
    minAccuracy: 0,
    maxLatency: null,
    latencyMetric: "ttft_s",
    hardware: new Set(ROWS.map((r) => r.hardware)),
    engine: new Set(ROWS.map((r) => r.engine)),
    search: "",
    sortKey: "energy_per_query_j",
    sortDir: "ascending",
    tab: "board",
    detail: null,
    // rows that failed harness check stay off the board unless asked (the toggle)
    showFailed: Boolean(DATA.include_failed_checks),
  };
  const isFailed = (r) => r.check === "fail";

  function passes(r) {
    if (r.energy_method !== state.method) return false;
    if (isFailed(r) && !state.showFailed) return false;
    if (!state.hardware.has(r.hardware) || !state.engine.has(r.engine)) return false;
    if (state.minAccuracy > 0 && !(r.accuracy !== null && r.accuracy >= state.minAccuracy)) return false;
    if (state.maxLatency !== null) {
      const lat = r[state.latencyMetric];
      if (lat === null || lat === undefined || lat > state.maxLatency) return false;
    }
    if (state.search) {
      const hay = [r.model, r.variant, r.hardware, r.device_name, r.quantization].join(" ").toLowerCase();
      if (!hay.includes(state.search)) return false;
    }
    return true;
  }
  function filteredSetups() { return ROWS.filter(passes); }

  function cheaper(a, b) {
    // least energy per query first (no figure last), then the more accurate
    const ea = a.energy_per_query_j, eb = b.energy_per_query_j;
    if (ea === null && eb !== null) return 1;
    if (eb === null && ea !== null) return -1;
    if (ea !== eb) return ea - eb;
    return (b.accuracy ?? -1) - (a.accuracy ?? -1);
  }
  function bestPerModel(setups) {
    const by = new Map();
    for (const r of setups) {
      if (!by.has(r.model)) by.set(r.model, []);
      by.get(r.model).push(r);
    }
    const out = [];
    for (const [model, rs] of by) {
      rs.sort(cheaper);
      out.push(Object.assign({}, rs[0], {
        best_setup: rs[0].variant + " / " + rs[0].hardware, n_setups: rs.length, model: model,
      }));
    }
    return out;
  }
  function compareValues(a, b, key, text) {
    const va = a[key], vb = b[key];
    const na = va === null || va === undefined, nb = vb === null || vb === undefined;
    if (na && nb) return 0;
    if (na) return 1; // missing values last in either direction
    if (nb) return -1;
    const c = text ? String(va).localeCompare(String(vb)) : va - vb;
    return state.sortDir === "ascending" ? c : -c;
  }

  // --- leaderboard table ------------------------------------------------------------------------
  function header(table, columns, sortable) {
    const tr = el("tr");
    for (const c of columns) {
      const th = el("th", { text: c.label, class: c.text ? "text" : null, "data-key": c.key });
      if (sortable && c.sort !== false) {
        th.setAttribute("data-sort", c.key);
        th.setAttribute("aria-sort", state.sortKey === c.key ? state.sortDir : "none");
        th.title = "Sort by " + c.label;
        th.addEventListener("click", () => {
          if (state.sortKey === c.key) {
            state.sortDir = state.sortDir === "ascending" ? "descending" : "ascending";
          } else {
            state.sortKey = c.key;
            state.sortDir = c.text ? "ascending" : (["accuracy", "tokens_per_s", "stars"].includes(c.key) ? "descending" : "ascending");
          }
          renderBoard();
        });
      }
      tr.append(th);
    }
    const thead = table.querySelector("thead");
    thead.replaceChildren(tr);
  }
  function cell(r, c) {
    const v = r[c.key];
    const attrs = { class: c.text ? "text" : null, "data-key": c.key };
    if (typeof v === "number") attrs["data-value"] = String(v);
    if (c.key === "model") {
      const b = el("button", { type: "button", class: "model", text: v, "data-model": v, title: "All setups of " + v });
      b.addEventListener("click", () => openDetail(v));
      return el("td", attrs, [b]);
    }
    if (c.key === "check") {
      // a mark per row: passed, warned (the reasons on hover), failed (shown only when asked)
      const why = (r.check_rules || "").split("; ").filter(Boolean).join("\n");
      const marks = { pass: ["✓ passed", "check-pass"], warn: ["⚠ warned", "check-warn"], fail: ["✗ failed", "check-fail"] };
      const [text, cls] = marks[v] || ["— not checked", "check-none"];
      const title = v === "pass" ? "Passed every rule of harness check" : (why || "not checked");
      return el("td", Object.assign(attrs, { title: title }), [el("span", { class: "check " + cls, text: text, "data-check": v || "" })]);
    }
    if (c.key === "stars") {
      return el("td", Object.assign(attrs, { title: DATA.star_rule }), [el("span", { class: "stars", text: starText(v) })]);
    }
    if (c.key === "energy_method") {
      const warn = (r.warnings || []).length;
      const td = el("td", Object.assign(attrs, { class: "text " + (v === "estimated" ? "estimated" : "") }), [v || "—"]);
      if (warn) td.append(el("span", { class: "warn", title: r.warnings.join("\n"), text: " ⚠ " + warn }));
      return td;
    }
    return el("td", attrs, [c.key === "params" ? fmtCount(v) : fmt(v)]);
  }
  function renderBoard(drawChart = true) {
    const table = $("leaderboard");
    header(table, BOARD_COLUMNS, true);
    const col = BOARD_COLUMNS.find((c) => c.key === state.sortKey) || {};
    const best = bestPerModel(filteredSetups()).sort(
      (a, b) => compareValues(a, b, state.sortKey, col.text) || String(a.model).localeCompare(String(b.model)));
    const body = best.map((r, i) => {
      r.rank = i + 1;
      return el("tr", { "data-model": r.model }, BOARD_COLUMNS.map((c) => cell(r, c)));
    });
    table.querySelector("tbody").replaceChildren(...body);
    const total = new Set(ROWS.filter((r) => r.energy_method === state.method).map((r) => r.model)).size;
    $("board-count").textContent = ROWS.length
      ? `${best.length} of ${total} models (${state.method} energy) meet the filters; ` +
        "each row is the model's setup with the least energy per query among those that do."
      : "These runs measured no model setup to rank (no inference case ran).";
    const failed = ROWS.filter((r) => r.energy_method === state.method && isFailed(r)).length;
    $("failed-note").textContent = !failed ? "" : state.showFailed
      ? `${failed} setup${failed === 1 ? "" : "s"} that failed harness check ${failed === 1 ? "is" : "are"} shown, marked ✗ (hover for the rules).`
      : `${failed} setup${failed === 1 ? "" : "s"} left off: failed harness check (tick "Show failed checks" to see ${failed === 1 ? "it" : "them"}, marked).`;
    if (state.tab === "board" && drawChart) renderPareto(filteredSetups());
    if (state.tab === "charts") renderCharts();
    if (state.tab === "compare") renderCompare();
    if (state.tab === "history") renderHistory();
  }

  // --- filters ----------------------------------------------------------------------------------
  function checkboxes(fieldset, values, set) {
    for (const v of [...new Set(values)].sort()) {
      const box = el("input", { type: "checkbox", value: v, checked: true });
      box.addEventListener("change", () => {
        if (box.checked) set.add(v); else set.delete(v);
        renderBoard();
      });
      fieldset.append(el("label", {}, [box, " " + v]));
    }
  }
  function setupFilters() {
    const method = $("f-method");
    for (const m of methods) method.append(el("option", { value: m, text: m, selected: m === state.method }));
    method.addEventListener("change", () => { state.method = method.value; renderBoard(); });
    const acc = $("f-min-accuracy");
    acc.addEventListener("input", () => {
      const v = parseFloat(acc.value);
      state.minAccuracy = Number.isFinite(v) ? v : 0;
      renderBoard();
    });
    const lat = $("f-max-latency");
    lat.addEventListener("input", () => {
      const v = parseFloat(lat.value);
      state.maxLatency = Number.isFinite(v) ? v : null;
      renderBoard();
    });
    const metric = $("f-latency-metric");
    metric.addEventListener("change", () => { state.latencyMetric = metric.value; renderBoard(); });
    checkboxes($("f-hardware"), ROWS.map((r) => r.hardware), state.hardware);
    checkboxes($("f-engine"), ROWS.map((r) => r.engine), state.engine);
    const failedBox = $("f-failed");
    failedBox.checked = state.showFailed;
    failedBox.addEventListener("change", () => { state.showFailed = failedBox.checked; renderBoard(); });
    const search = $("f-search");
    search.addEventListener("input", () => { state.search = search.value.trim().toLowerCase(); renderBoard(); });
  }

  // --- detail view ------------------------------------------------------------------------------
  function plainTable(table, columns, rows) {
    const tr = el("tr", {}, columns.map((c) => el("th", { text: c.label, class: c.text ? "text" : null })));
    table.querySelector("thead").replaceChildren(tr);
    table.querySelector("tbody").replaceChildren(...rows.map((r) => el("tr", {}, columns.map((c) => cell(r, c)))));
  }
  function runFacts(run) {
    const sensors = (run.sensors || []).map((s) =>
      el("li", { text: `${s.source || "?"} ${s.domain || ""} (${s.kind || "?"}): ${s.status || "?"}${s.reason ? " — " + s.reason : ""}` }));
    const m = run.measurement || {};
    const settings = Object.entries(m).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(",") : v}`).join(", ");
    const host = run.host || {};
    const carbon = run.carbon || {};
    return el("div", { class: "run-facts", "data-run": run.run_id }, [
      el("h3", { text: `${run.run_id} (suite ${run.suite}, started ${run.started || "?"})` }),
      el("div", { text: "host: " + (Object.entries(host).map(([k, v]) => `${k} ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ") || "—") }),
      el("div", { text: "measurement: " + (settings || "—") }),
      el("div", { text: "carbon: " + (Object.entries(carbon).map(([k, v]) => `${k} ${v}`).join(", ") || "—") }),
      el("div", { text: "sensors:" }),
      el("ul", {}, sensors.length ? sensors : [el("li", { text: "none recorded" })]),
    ]);
  }
  function measuredPanel(rows) {
    const out = [];
    const methodsSeen = [...new Set(rows.map((r) => `${r.energy_method} (${r.energy_sources || "no source recorded"})`))];
    out.push(el("p", { text: "Energy: " + methodsSeen.join("; ") +
      ". measured = a hardware counter or power sensor; estimated = a model (CPU TDP × utilisation, RAM per GB)." }));
    const warnings = [];
    for (const r of rows) for (const w of r.warnings || []) warnings.push(`${r.variant}/${r.hardware}: ${w}`);
    out.push(el("div", { class: warnings.length ? "warn" : "" }, [
      warnings.length ? "Warnings:" : "No warnings on these measurements.",
      el("ul", {}, [...new Set(warnings)].map((w) => el("li", { text: w }))),
    ]));
    const runIds = new Set(rows.map((r) => r.run_id));
    for (const run of RUNS) if (runIds.has(run.run_id)) out.push(runFacts(run));
    return out;
  }
  function openDetail(model) {
    state.detail = model;
    const rows = ROWS.filter((r) => r.model === model).sort(cheaper);
    $("detail-title").textContent = `${model}: ${rows.length} setup${rows.length === 1 ? "" : "s"}`;
    plainTable($("detail-setups"), SETUP_COLUMNS, rows);
    $("detail-measured").replaceChildren(...measuredPanel(rows));
    const svg = DATA.labels[model];
    const url = svg ? "data:image/svg+xml;charset=utf-8," + encodeURIComponent(svg) : "";
    $("detail-label").src = url;
    const a = $("label-download");
    a.href = url;
    a.download = model.replace(/[^A-Za-z0-9._-]/g, "_") + ".svg";
    $("detail").hidden = false;
  }
  $("detail-close").addEventListener("click", () => { $("detail").hidden = true; state.detail = null; });

  // --- charts -----------------------------------------------------------------------------------
  const PLOT_CONFIG = { displaylogo: false, responsive: true };
  function paretoFront(points) {
    // cheapest first; a point is on the front when it is more accurate than every cheaper one
    const sorted = points.slice().sort((a, b) => a.energy_per_query_j - b.energy_per_query_j || b.accuracy - a.accuracy);
    const front = [];
    let best = -Infinity;
    for (const p of sorted) if (p.accuracy > best) { front.push(p); best = p.accuracy; }
    return front;
  }
  function byModel(points) {
    const groups = new Map();
    for (const p of points) {
      if (!groups.has(p.model)) groups.set(p.model, []);
      groups.get(p.model).push(p);
    }
    return groups;
  }
  function prepare(div) {
    // a chart div that showed a note becomes a chart again
    if (div.classList.contains("empty")) {
      div.classList.remove("empty");
      div.replaceChildren();
    }
  }
  const MAX_LEGEND_MODELS = 12;
  function modelTraces(points, x, y, hovertemplate) {
    // one trace (and legend entry) per model while a legend can be read; one for all beyond
    const groups = byModel(points);
    const parts = groups.size <= MAX_LEGEND_MODELS ? [...groups] : [[`setups of ${groups.size} models`, points]];
    return parts.map(([name, ps]) => ({
      type: "scatter", mode: "markers", name, x: ps.map((p) => p[x]), y: ps.map((p) => p[y]),
      text: ps.map((p) => p.setup), hovertemplate, marker: { size: 9 },
    }));
  }
  function emptyNote(div, text) {
    Plotly.purge(div);
    div.classList.add("empty");
    div.replaceChildren(el("p", { class: "note", text }));
  }
  function renderPareto(setups) {
    const m = state.method;
    const pts = setups.filter((r) => r.accuracy !== null && r.energy_per_query_j !== null);
    const pareto = $("chart-pareto");
    if (!pts.length) {
      emptyNote(pareto, "No setup meeting the filters has both an accuracy and an energy per query.");
    } else {
      const traces = modelTraces(pts, "energy_per_query_j", "accuracy",
        "%{text}<br>%{x:.4g} J/query<br>accuracy %{y:.3f}<extra></extra>");
      const front = paretoFront(pts);
      traces.push({
        type: "scatter", mode: "lines+markers", name: "Pareto front", line: { shape: "hv", color: "black" },
        marker: { symbol: "circle-open", size: 13, color: "black" },
        x: front.map((p) => p.energy_per_query_j), y: front.map((p) => p.accuracy), text: front.map((p) => p.setup),
        hovertemplate: "front: %{text}<extra></extra>",
      });
      prepare(pareto);
      Plotly.react(pareto, traces, {
        title: { text: `Accuracy against energy per query (${m} energy)` },
        xaxis: { title: { text: "energy per query (J)" }, type: "log" },
        yaxis: { title: { text: "accuracy (fraction)" } }, margin: { t: 50 },
      }, PLOT_CONFIG);
    }
  }
  function renderCharts() {
    const setups = filteredSetups();
    const m = state.method;
    const params = $("chart-params");
    const pp = setups.filter((r) => r.params !== null && r.energy_per_token_j !== null);
    if (!pp.length) {
      emptyNote(params, "No setup meeting the filters has both a parameter count and an energy per token.");
    } else {
      prepare(params);
      Plotly.react(params, modelTraces(pp, "params", "energy_per_token_j",
        "%{text}<br>%{x:.3s} parameters<br>%{y:.4g} J/token<extra></extra>"), {
        title: { text: `Energy per token against parameters (${m} energy)` },
        xaxis: { title: { text: "parameters" }, type: "log" },
        yaxis: { title: { text: "energy per token (J)" }, type: "log" }, margin: { t: 50 },
      }, PLOT_CONFIG);
    }
    const serving = $("chart-serving");
    const sv = SERVING.filter((s) => s.energy_method === m && state.hardware.has(s.hardware));
    if (!sv.length) {
      emptyNote(serving, "Energy per request against concurrency: no serving case was measured in these runs (" + m + " energy).");
    } else {
      const groups = new Map();
      for (const s of sv) {
        const key = `${s.model}/${s.variant}/${s.hardware}`;
        if (!groups.has(key)) groups.set(key, []);
        groups.get(key).push(s);
      }
      prepare(serving);
      Plotly.react(serving, [...groups].map(([key, ss]) => {
        ss.sort((a, b) => a.concurrency - b.concurrency);
        return { type: "scatter", mode: "lines+markers", name: key, x: ss.map((s) => s.concurrency), y: ss.map((s) => s.energy_per_request_j) };
      }), {
        title: { text: `Energy per request against concurrency (serving, ${m} energy)` },
        xaxis: { title: { text: "concurrent requests" }, type: "log" },
        yaxis: { title: { text: "energy per request (J)" } }, margin: { t: 50 },
      }, PLOT_CONFIG);
    }
  }

  // --- compare view -----------------------------------------------------------------------------
  const COMPARE_ROWS = [
    ["best_setup", "Best setup (variant / hardware)"], ["params", "Parameters"], ["stars", "Stars (1–5)"],
    ["accuracy", "Accuracy (fraction)"], ["energy_per_query_j", "Energy per query (J)"],
    ["energy_per_token_j", "Energy per token (J)"], ["wh_per_1000_queries", "Energy per 1,000 queries (Wh)"],
    ["tokens_per_s", "Throughput (tokens/s)"], ["ttft_s", "TTFT (s)"], ["latency_p90_s", "p90 latency (s)"],
    ["energy_to_train_j", "Energy to train (J)"], ["energy_method", "Energy method"], ["n_setups", "Setups meeting filters"],
  ];
  function setupCompare() {
    for (const id of ["compare-a", "compare-b"]) $(id).addEventListener("change", renderCompare);
  }
  function fillCompare() {
    // the models ranked in the chosen energy method; a choice that is still there is kept
    const models = [...new Set(ROWS.filter((r) => r.energy_method === state.method).map((r) => r.model))].sort();
    const key = models.join("\n");
    [["compare-a", 0], ["compare-b", 1]].forEach(([id, i]) => {
      const s = $(id);
      if (s.dataset.models === key) return;
      const keep = models.includes(s.value) ? s.value : models[Math.min(i, models.length - 1)];
      s.replaceChildren(...models.map((m) => el("option", { value: m, text: m, selected: m === keep })));
      s.dataset.models = key;
    });
  }
  // figures that depend on the shape, taken at one both setups measured (harness/report/shapes.py)
  const SHAPED = ["energy_per_query_j", "energy_per_token_j", "tokens_per_s", "ttft_s", "latency_p90_s"];
  function atSharedShape(ra, rb) {
    // each row's shapes come in the order the shapes rule prefers: the first of A's that B has
    const other = new Map((rb.shapes || []).map((s) => [s[0], s]));
    const mine = (ra.shapes || []).find((s) => other.has(s[0]));
    if (!mine) return null;
    const pick = (s) => {
      const out = { shape: s[1] };
      SHAPED.forEach((k, i) => { out[k] = s[2 + i]; });
      out.wh_per_1000_queries = out.energy_per_query_j === null ? null : out.energy_per_query_j / 3.6;
      return out;
    };
    return [pick(mine), pick(other.get(mine[0]))];
  }
  function measuredShapes(r) {
    return [...new Set((r.shapes || []).map((s) => s[1]))].join(", ") || "no shape";
  }
  function renderCompare() {
    fillCompare();
    const best = new Map(bestPerModel(filteredSetups()).map((r) => [r.model, r]));
    const a = $("compare-a").value, b = $("compare-b").value;
    let ra = best.get(a) || {}, rb = best.get(b) || {};
    const shared = best.has(a) && best.has(b) ? atSharedShape(ra, rb) : null;
    const shaped = [...SHAPED, "wh_per_1000_queries"];
    if (shared) {
      ra = { ...ra, ...shared[0] };
      rb = { ...rb, ...shared[1] };
    } else {
      const none = Object.fromEntries([...shaped, "shape"].map((k) => [k, null]));
      ra = { ...ra, ...none };
      rb = { ...rb, ...none };
    }
    const table = $("compare-table");
    table.querySelector("thead").replaceChildren(el("tr", {}, [
      el("th", { class: "text", text: `${state.method} energy` }), el("th", { text: a }), el("th", { text: b }),
      el("th", { text: "B / A" })]));
    const body = [["shape", "Shape compared at"], ...COMPARE_ROWS].map(([key, label]) => {
      const va = ra[key], vb = rb[key];
      const figure = !["stars", "n_setups", "best_setup", "energy_method", "shape"].includes(key);
      const ratio = figure && typeof va === "number" && typeof vb === "number" && va !== 0 ? fmt(vb / va) : "";
      const show = (v) => (key === "stars" ? starText(v ?? null) : key === "params" ? fmtCount(v ?? null)
        : key === "shape" ? (v ?? "—") : fmt(v ?? null));
      return el("tr", { "data-key": key }, [el("td", { class: "text", text: label }), el("td", { text: show(va) }),
        el("td", { text: show(vb) }), el("td", { text: ratio })]);
    });
    if (!best.has(a) || !best.has(b)) {
      body.unshift(el("tr", {}, [el("td", { class: "text warn", colspan: 4,
        text: "A model with no setup meeting the filters shows dashes." })]));
    } else if (!shared) {
      body.unshift(el("tr", { "data-key": "no-shape" }, [el("td", { class: "text warn", colspan: 4,
        text: `No shape both measured (${a}: ${measuredShapes(best.get(a))}; ${b}: `
          + `${measuredShapes(best.get(b))}): no energy, throughput or latency figure is compared.` })]));
    }
    table.querySelector("tbody").replaceChildren(...body);
    // every setup of the two models under the filters, in accuracy-energy space
    const setups = filteredSetups().filter((r) => (r.model === a || r.model === b) && r.energy_per_query_j !== null);
    const div = $("chart-compare");
    if (!setups.length) {
      emptyNote(div, "Neither model has a setup with an energy per query under the filters.");
    } else {
      prepare(div);
      Plotly.react(div, [a, b].filter((m, i) => i === 0 || m !== a).map((m) => {
        const ps = setups.filter((r) => r.model === m);
        return { type: "scatter", mode: "markers", name: m, x: ps.map((p) => p.energy_per_query_j),
          y: ps.map((p) => p.accuracy), text: ps.map((p) => p.setup), marker: { size: 11 },
          hovertemplate: "%{text}<br>%{x:.4g} J/query<br>accuracy %{y:.3f}<extra></extra>" };
      }), { title: { text: `All setups of ${a} and ${b} under the filters (${state.method} energy)` },
        xaxis: { title: { text: "energy per query at each setup's headline shape (J)" }, type: "log" }, yaxis: { title: { text: "accuracy (fraction)" } },
        margin: { t: 50 } }, PLOT_CONFIG);
    }
  }

  // --- history ----------------------------------------------------------------------------------
  const METRIC_LABEL = {
    energy_per_token_j: "energy per token (J)", energy_per_query_j: "energy per query (J)", accuracy: "accuracy (fraction)",
  };
  function suitesWithHistory() {
    const runs = new Map();
    for (const p of POINTS) {
      if (!runs.has(p.suite)) runs.set(p.suite, new Set());
      runs.get(p.suite).add(p.run_id);
    }
    return [...runs].filter(([, ids]) => ids.size >= 2).map(([s]) => s).sort();
  }
  function setupHistory() {
    const suites = suitesWithHistory();
    const s = $("history-suite");
    for (const name of suites) s.append(el("option", { value: name, text: name }));
    s.addEventListener("change", () => { fillSetups(); renderHistory(); });
    $("history-setups").addEventListener("change", renderHistory);
    fillSetups();
  }
  function fillSetups() {
    const suite = $("history-suite").value;
    const setups = [...new Set(POINTS.filter((p) => p.suite === suite).map((p) => p.setup))].sort();
    const flagged = new Set(REGRESSIONS.filter((r) => r.suite === suite).map((r) => r.setup));
    // flagged setups first selected, then the rest up to six
    const chosen = new Set([...flagged].slice(0, 6));
    for (const s of setups) if (chosen.size < 6) chosen.add(s);
    $("history-setups").replaceChildren(...setups.map((s) => el("option", { value: s, text: s, selected: chosen.has(s) })));
  }
  function renderHistory() {
    const suite = $("history-suite").value;
    const note = $("history-note");
    if (!suite) {
      note.textContent = "History needs at least two runs of one suite; these runs have none.";
      for (const m of DATA.history.metrics) emptyNote($("chart-history-" + m), "");
    } else {
      const runIds = new Set(POINTS.filter((p) => p.suite === suite).map((p) => p.run_id));
      note.textContent = `${runIds.size} runs of suite ${suite}, ${state.method} energy. Red crosses: changes that harness compare flags as regressions against the run before (threshold ${DATA.threshold}).`;
    }
    const chosen = new Set([...$("history-setups").selectedOptions].map((o) => o.value));
    const pts = POINTS.filter((p) => p.suite === suite && chosen.has(p.setup) && p.energy_method === state.method);
    const regs = REGRESSIONS.filter((r) => r.suite === suite);
    if (suite) {
      for (const m of DATA.history.metrics) {
        const traces = [];
        for (const setup of [...chosen].sort()) {
          const ps = pts.filter((p) => p.setup === setup && p[m] !== null)
            .sort((a, b) => String(a.started).localeCompare(String(b.started)));
          if (!ps.length) continue;
          traces.push({ type: "scatter", mode: "lines+markers", name: setup, x: ps.map((p) => p.started),
            y: ps.map((p) => p[m]), text: ps.map((p) => p.run_id), hovertemplate: "%{text}<br>%{y:.4g}<extra>" + setup + "</extra>" });
        }
        const flagged = [];
        for (const r of regs.filter((r) => r.metric === m && chosen.has(r.setup))) {
          const p = pts.find((q) => q.run_id === r.run_id && q.setup === r.setup);
          if (p && p[m] !== null) flagged.push(Object.assign({ change: r.change_rel }, p));
        }
        if (flagged.length) {
          traces.push({ type: "scatter", mode: "markers", name: "regression (harness compare)",
            marker: { symbol: "x", size: 15, color: "#d00000", line: { width: 2 } },
            x: flagged.map((p) => p.started), y: flagged.map((p) => p[m]),
            text: flagged.map((p) => `${p.setup} in ${p.run_id}: ${(100 * p.change).toFixed(1)}%`),
            hovertemplate: "%{text}<extra>regression</extra>" });
        }
        const div = $("chart-history-" + m);
        if (!traces.length) { emptyNote(div, `No ${METRIC_LABEL[m]} for the chosen setups.`); continue; }
        prepare(div);
        Plotly.react(div, traces, { title: { text: `${METRIC_LABEL[m]} over time` },
          xaxis: { title: { text: "run started (UTC)" } }, yaxis: { title: { text: METRIC_LABEL[m] } }, margin: { t: 50 } }, PLOT_CONFIG);
      }
    }
    const cols = [
      { key: "run_id", label: "Run", text: true }, { key: "base_run_id", label: "Against", text: true },
      { key: "setup", label: "Setup", text: true }, { key: "metric", label: "Metric", text: true },
      { key: "base", label: "Before" }, { key: "new", label: "After" }, { key: "change_pct", label: "Change (%)" },
      { key: "note", label: "Note", text: true },
    ];
    const rows = regs.map((r) => Object.assign({}, r, { change_pct: r.change_rel === null ? null : 100 * r.change_rel }));
    plainTable($("regressions"), cols, rows.length ? rows : []);
    if (!rows.length) $("regressions").querySelector("tbody").replaceChildren(el("tr", {}, [el("td", { class: "text", colspan: cols.length, text: "none" })]));
  }

  // --- how it was measured ----------------------------------------------------------------------
  function renderMeasured() {
    const box = $("measured-runs");
    const intro = el("div", {}, [
      el("p", { text: "Every energy figure says how it was obtained: measured (a hardware counter or power sensor: RAPL, NVML, hwmon) or estimated (a model, used only where nothing measures). The two are never ranked together: the energy method filter chooses one." }),
      el("p", { text: "Each figure is the median over repetitions at the setup's headline inference shape (its largest batch size); see docs/methodology.md." }),
    ]);
    const warnings = ROWS.filter((r) => (r.warnings || []).length);
    const warn = el("div", { class: warnings.length ? "warn" : "" }, [
      warnings.length ? `${warnings.length} setups carry warnings:` : "No setup carries a warning.",
      el("ul", {}, warnings.map((r) => el("li", { text: `${r.setup} (${r.energy_method}): ${r.warnings.join("; ")}` }))),
    ]);
    box.replaceChildren(intro, warn, el("h3", { text: `${RUNS.length} run${RUNS.length === 1 ? "" : "s"}` }), ...RUNS.map(runFacts));
  }

  // --- tabs -------------------------------------------------------------------------------------
  function showTab(name) {
    state.tab = name;
    for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
    for (const s of document.querySelectorAll("section.tab")) s.hidden = s.id !== "tab-" + name;
    if (name === "board") renderPareto(filteredSetups());
    if (name === "charts") renderCharts();
    if (name === "compare") renderCompare();
    if (name === "history") renderHistory();
  }
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));

  // --- start ------------------------------------------------------------------------------------
  const suites = [...new Set(RUNS.map((r) => r.suite))];
  $("subtitle").textContent = `${ROWS.length} setups of ${new Set(ROWS.map((r) => r.model)).size} models from ${RUNS.length} run${RUNS.length === 1 ? "" : "s"} (suite ${suites.join(", ")}); built ${DATA.generated}.`;
  $("star-rule").textContent = DATA.star_rule;
  setupFilters();
  setupCompare();
  setupHistory();
  renderMeasured();
  renderBoard(false); // the table first; its chart right after, once the table answers
  window.harnessReadyMs = performance.now();
  document.documentElement.dataset.ready = "true";
  setTimeout(() => {
    renderPareto(filteredSetups());
    window.harnessChartMs = performance.now();
    document.documentElement.dataset.chart = "true";
  }, 0);
})();
