// Squall's live dashboard: fetches the scheduler's snapshot (api/snapshot, beside the page) every second and
// draws it. Plain browser JavaScript, no build step; charts by uPlot (vendored beside this file).
//
// Every string from the snapshot reaches the page through textContent or a <progress> value,
// never as markup: executor ids, run ids and event details are data, not HTML.
"use strict";

(function () {
  const REFRESH_MS = 1000;
  const CHART_HEIGHT = 170;
  // Rates are averaged over this many batches: a group's batches arrive together, and one
  // batch's records over the few milliseconds between two of them would be a spike, not a rate.
  const RATE_SPAN = 10;

  // The charts of each stream, after Spark's Structured Streaming tab. `series` lists the lines:
  // each takes the stream's points (oldest first) and gives one value per point (null: none).
  const CHARTS = [
    {
      name: "input_rate", title: "Input and processing rate", unit: "records/s",
      series: [
        { label: "input", stroke: "#2f6fdf", values: inputRates },
        { label: "processed", stroke: "#e5862b", values: processingRates },
      ],
    },
    { name: "batch_duration", title: "Batch duration (latency)", unit: "ms",
      series: [{ label: "latency", stroke: "#7b3fb5", values: seconds("latency") }] },
    { name: "scheduling_delay", title: "Scheduling delay", unit: "ms",
      series: [{ label: "delay", stroke: "#1e8449", values: seconds("scheduling_delay") }] },
    { name: "processing_time", title: "Processing time", unit: "ms",
      series: [{ label: "processing", stroke: "#b03a2e", values: seconds("processing_time") }] },
    // Only batches that close a window have one: the points are joined across the batches between.
    { name: "window_latency", title: "Window latency", unit: "ms",
      series: [{ label: "window", stroke: "#117a8b", values: seconds("window_latency"), sparse: true }] },
    { name: "group_size", title: "Group size", unit: "batches",
      series: [{ label: "group", stroke: "#5d6d7e", values: (points) => points.map((p) => p.group_size) }] },
    // Shown for sources that can tell what they hold unread (Redis Streams), hidden otherwise.
    { name: "source_lag", title: "Source lag", unit: "records unread", optional: true,
      series: [{ label: "lag", stroke: "#c0392b", values: (points) => points.map((p) => (p.source_lag === undefined ? null : p.source_lag)) }] },
  ];

  const streamViews = new Map(); // run id -> {root, facts, charts: [{spec, el, plot}]}
  let lastSuccess = 0;

  // --- values plotted -------------------------------------------------------------------------

  function seconds(field) {
    return (points) => points.map((p) => (p[field] === null || p[field] === undefined ? null : p[field] * 1000));
  }

  // Records a second arriving: the records of the last RATE_SPAN batches over the time they took.
  function inputRates(points) {
    return points.map((p, i) => {
      const first = Math.max(0, i - RATE_SPAN);
      if (i === 0 || p.input_records < 0) return null;
      let records = 0;
      for (let j = first + 1; j <= i; j++) {
        if (points[j].input_records < 0) return null;
        records += points[j].input_records;
      }
      const span = p.t - points[first].t;
      return span > 0 ? records / span : null;
    });
  }

  // Records a second of processing: the same batches' records over their processing time.
  function processingRates(points) {
    return points.map((p, i) => {
      if (p.input_records < 0) return null;
      let records = 0;
      let busy = 0;
      for (let j = Math.max(0, i - RATE_SPAN + 1); j <= i; j++) {
        if (points[j].input_records < 0) return null;
        records += points[j].input_records;
        busy += points[j].processing_time;
      }
      return busy > 0 ? records / busy : null;
    });
  }

  // --- formatting -----------------------------------------------------------------------------

  function fmtBytes(n) {
    if (!n) return "0 B";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
  }

  function fmtSeconds(s) {
    if (s === null || s === undefined) return "–";
    if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 1) + " ms";
    if (s < 120) return s.toFixed(1) + " s";
    if (s < 7200) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(1) + " h";
  }

  function fmtNumber(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 1 ? 1 : 2;
    return v.toLocaleString(undefined, { maximumFractionDigits: digits });
  }

  // An axis label short enough for the axis: 150k, 1.2M.
  function fmtAxis(v) {
    const a = Math.abs(v);
    if (a >= 1e6) return +(v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return +(v / 1e3).toFixed(0) + "k";
    return fmtNumber(v);
  }

  function fmtClock(t) {
    return new Date(t * 1000).toLocaleTimeString();
  }

  // --- building elements (text only) ----------------------------------------------------------

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function replaceContent(container, ...nodes) {
    container.replaceChildren(...nodes);
  }

  // columns: [{title, value: row -> text, num?: bool, cls?: row -> class}]
  function table(columns, rows, id) {
    const t = el("table");
    if (id) t.id = id;
    const head = el("tr");
    for (const c of columns) head.appendChild(el("th", c.title, c.num ? "num" : c.wrap ? "wrap" : ""));
    t.appendChild(el("thead")).appendChild(head);
    const body = t.appendChild(el("tbody"));
    for (const row of rows) {
      const tr = body.appendChild(el("tr"));
      for (const c of columns) {
        const classes = [c.num ? "num" : "", c.wrap ? "wrap" : "", c.cls ? c.cls(row) : ""].filter(Boolean).join(" ");
        tr.appendChild(el("td", c.value(row), classes));
      }
    }
    return t;
  }

  function facts(pairs) {
    const p = el("p", null, "facts");
    pairs.forEach(([label, value], i) => {
      if (i > 0) p.appendChild(document.createTextNode(" · "));
      p.appendChild(document.createTextNode(label + " "));
      p.appendChild(el("b", value));
    });
    return p;
  }

  // --- the cluster ----------------------------------------------------------------------------

  function renderCluster(snap) {
    const s = snap.scheduler || {};
    const executors = snap.executors || [];
    const slots = executors.reduce((n, e) => n + (e.slots || 0), 0);
    replaceContent(document.getElementById("scheduler"), facts([
      ["scheduler", s.address || "–"],
      ["up", fmtSeconds(s.uptime || 0)],
      ["executors", String(executors.length)],
      ["slots", String(slots)],
    ]));
    const container = document.getElementById("executors");
    if (executors.length === 0) {
      replaceContent(container, el("p", "No executors registered.", "empty"));
      return;
    }
    replaceContent(container, table([
      { title: "executor", value: (e) => e.id },
      { title: "address", value: (e) => e.address },
      { title: "slots", value: (e) => e.slots, num: true },
      { title: "latency tasks", value: (e) => e.latency_tasks, num: true },
      { title: "batch tasks", value: (e) => e.batch_tasks, num: true },
      { title: "suspended", value: (e) => e.suspended_tasks, num: true },
      { title: "memory", value: (e) => fmtBytes(e.memory_bytes), num: true },
      { title: "persisted", value: (e) => fmtBytes(e.persisted_bytes), num: true },
      { title: "stalled", value: (e) => (e.stalled ? "yes" : "no"), cls: (e) => (e.stalled ? "yes" : "no") },
      { title: "slowness", value: (e) => fmtNumber(e.slowness), num: true },
      { title: "last beat", value: (e) => fmtSeconds(e.last_beat_age) + " ago", num: true },
    ], executors, "executors-table"));
  }

  // --- streams --------------------------------------------------------------------------------

  function chartWidth(container) {
    return Math.max(240, container.clientWidth);
  }

  function newStreamView(run) {
    const root = el("div", null, "stream");
    root.dataset.run = run;
    root.appendChild(el("h3", "stream " + run));
    const factsHolder = root.appendChild(el("div"));
    const grid = root.appendChild(el("div", null, "charts"));
    const charts = CHARTS.map((spec) => {
      const holder = grid.appendChild(el("div", null, "chart"));
      holder.dataset.chart = spec.name;
      holder.dataset.points = "0";
      holder.hidden = Boolean(spec.optional);
      return { spec, el: holder, plot: null };
    });
    document.getElementById("streams").appendChild(root);
    return { root, facts: factsHolder, charts };
  }

  function newPlot(spec, holder) {
    const opts = {
      title: spec.title + " (" + spec.unit + ")",
      width: chartWidth(holder),
      height: CHART_HEIGHT,
      scales: { x: { time: true } },
      series: [{}].concat(spec.series.map((s) => ({
        label: s.label,
        stroke: s.stroke,
        width: 1.5,
        spanGaps: Boolean(s.sparse),
        points: s.sparse ? { show: true, size: 4 } : { show: false },
        value: (u, v) => fmtNumber(v),
      }))),
      axes: [{}, { size: 50, values: (u, splits) => splits.map(fmtAxis) }],
    };
    const empty = [[]].concat(spec.series.map(() => []));
    return new uPlot(opts, empty, holder);
  }

  function updateChart(chart, points) {
    const xs = points.map((p) => p.t);
    const ys = chart.spec.series.map((s) => s.values(points));
    if (chart.spec.optional && chart.el.hidden) {
      if (!ys.some((y) => y.some((v) => v !== null))) return;
      chart.el.hidden = false;
    }
    if (chart.plot === null) chart.plot = newPlot(chart.spec, chart.el);
    chart.plot.setData([xs].concat(ys));
    // How many points carry a value: what a reader (or a test) waits for.
    const plotted = xs.filter((_, i) => ys.some((y) => y[i] !== null && y[i] !== undefined)).length;
    chart.el.dataset.points = String(plotted);
  }

  function renderStreams(snap) {
    const streams = snap.streams || [];
    const seen = new Set();
    for (const s of streams) {
      seen.add(s.run);
      let view = streamViews.get(s.run);
      if (!view) {
        view = newStreamView(s.run);
        streamViews.set(s.run, view);
      }
      replaceContent(view.facts, facts([
        ["batches", fmtNumber(s.batches)],
        ["last batch", String(s.last_batch)],
        ["group size", String(s.group_size)],
        ["input", fmtNumber(s.input_rate) + " records/s"],
        ["processed", fmtNumber(s.processing_rate) + " records/s"],
        ["latency p50", fmtSeconds(s.latency_p50)],
        ["p99", fmtSeconds(s.latency_p99)],
      ].concat(s.source_lag === null || s.source_lag === undefined ? [] : [["source lag", fmtNumber(s.source_lag) + " records"]])));
      const points = s.points || [];
      for (const chart of view.charts) updateChart(chart, points);
    }
    for (const [run, view] of streamViews) {
      if (!seen.has(run)) {
        for (const chart of view.charts) if (chart.plot) chart.plot.destroy();
        view.root.remove();
        streamViews.delete(run);
      }
    }
    let empty = document.getElementById("streams-empty");
    if (streams.length === 0 && !empty) {
      empty = el("p", "No streams running.", "empty");
      empty.id = "streams-empty";
      document.getElementById("streams").appendChild(empty);
    } else if (streams.length > 0 && empty) {
      empty.remove();
    }
  }

  function resizeCharts() {
    for (const view of streamViews.values()) {
      for (const chart of view.charts) {
        if (chart.plot) chart.plot.setSize({ width: chartWidth(chart.el), height: CHART_HEIGHT });
      }
    }
  }

  // --- runs, persisted datasets, events -------------------------------------------------------

  function renderRuns(snap, now) {
    const runs = snap.runs || [];
    const container = document.getElementById("runs");
    if (runs.length === 0) {
      replaceContent(container, el("p", "No runs in flight.", "empty"));
      return;
    }
    replaceContent(container, ...runs.map((r) => {
      const box = el("div", null, "run");
      box.dataset.run = r.run;
      box.appendChild(el("h3", r.stream ? "stream " + r.stream + " (run " + r.run + ")" : r.kind + " " + r.run));
      box.appendChild(facts([
        ["priority", r.priority],
        ["jobs", r.jobs_done + " of " + r.jobs + " done"],
        ["running for", fmtSeconds(Math.max(0, now - r.started))],
      ]));
      for (const st of r.stages || []) {
        const line = box.appendChild(el("div", null, "stage"));
        line.appendChild(el("span", "stage " + st.stage + ": " + st.done + " / " + st.tasks));
        const bar = line.appendChild(el("progress"));
        bar.max = Math.max(1, st.tasks);
        bar.value = Math.min(st.done, st.tasks);
      }
      return box;
    }));
  }

  function renderPersisted(snap) {
    const rows = snap.persisted || [];
    const container = document.getElementById("persisted");
    if (rows.length === 0) {
      replaceContent(container, el("p", "No datasets persisted.", "empty"));
      return;
    }
    replaceContent(container, table([
      { title: "dataset", value: (d) => d.dataset },
      { title: "executors", value: (d) => d.executors, num: true },
      { title: "size", value: (d) => fmtBytes(d.bytes), num: true },
    ], rows));
  }

  const EVENT_KINDS = new Set(["executor_joined", "executor_left", "executor_lost", "recovered", "job_failed",
    "speculated", "state_moved"]);

  function renderEvents(snap) {
    const events = (snap.events || []).slice().reverse(); // newest first
    const container = document.getElementById("events");
    if (events.length === 0) {
      replaceContent(container, el("p", "No events yet.", "empty"));
      return;
    }
    replaceContent(container, table([
      { title: "time", value: (e) => fmtClock(e.t) },
      { title: "event", value: (e) => e.kind.replace(/_/g, " "), cls: (e) => (EVENT_KINDS.has(e.kind) ? "kind-" + e.kind : "") },
      { title: "took", value: (e) => (e.seconds === null || e.seconds === undefined ? "" : fmtSeconds(e.seconds)), num: true },
      { title: "detail", value: (e) => e.detail, wrap: true },
    ], events));
  }

  // --- the refresh loop -----------------------------------------------------------------------

  function setStatus(text, stale) {
    const status = document.getElementById("status");
    status.textContent = text;
    status.classList.toggle("stale", stale);
  }

  function render(snap) {
    const now = snap.time || Date.now() / 1000;
    renderCluster(snap);
    renderStreams(snap);
    renderRuns(snap, now);
    renderPersisted(snap);
    renderEvents(snap);
    setStatus("updated " + fmtClock(now), false);
  }

  async function refresh() {
    try {
      const response = await fetch("api/snapshot", { cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      render(await response.json());
      lastSuccess = Date.now();
    } catch (err) {
      const since = lastSuccess ? " since " + new Date(lastSuccess).toLocaleTimeString() : "";
      setStatus("scheduler unreachable" + since + " (" + err.message + ")", true);
    } finally {
      setTimeout(refresh, REFRESH_MS);
    }
  }

  window.addEventListener("resize", resizeCharts);
  refresh();
})();
