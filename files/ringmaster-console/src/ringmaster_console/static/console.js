// The fleet page: polls /api/status every second and updates the tables and charts in place
// (forms are built once, so a number being typed survives the updates).
"use strict";
(function () {
  const POINTS = 60;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const state = { charts: {}, polls: 0, last: null };
  window.ringmaster = state;

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function actionForm(fields, label) {
    const f = el("form", { method: "post", action: "/confirm", class: "inline" });
    f.append(el("input", { type: "hidden", name: "csrf_token", value: csrf }));
    for (const [k, v] of Object.entries(fields)) f.append(el("input", { type: "hidden", name: k, value: v }));
    f.append(el("button", { type: "submit", "data-op": fields.op }, label));
    return f;
  }
  function mb(bytes) { return bytes == null ? null : Math.round(bytes / 1048576 * 10) / 10; }
  function age(s) {
    if (s == null) return "";
    if (s < 120) return Math.round(s) + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    return Math.round(s / 3600) + " h";
  }
  function color(i) { return `hsl(${(i * 67) % 360}, 65%, 45%)`; }

  function chart(canvas, title) {
    return new Chart(canvas.getContext("2d"), {
      type: "line",
      data: { labels: [], datasets: [] },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false, normalized: true,
        plugins: { title: { display: true, text: title }, legend: { position: "bottom", labels: { boxWidth: 12 } } },
        scales: { x: { ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 5 } }, y: { beginAtZero: true } },
        elements: { point: { radius: 0 } },
      },
    });
  }
  function push(c, label, values, prefix = "pid ") {
    c.data.labels.push(label);
    if (c.data.labels.length > POINTS) c.data.labels.shift();
    const n = c.data.labels.length;
    for (const [pid, value] of Object.entries(values)) {
      let ds = c.data.datasets.find((d) => d.label === prefix + pid);
      if (!ds) {
        ds = { label: prefix + pid, data: new Array(n - 1).fill(null), borderColor: color(c.data.datasets.length), spanGaps: false };
        c.data.datasets.push(ds);
      }
      ds.data.push(value);
    }
    for (const ds of c.data.datasets) {
      while (ds.data.length < n) ds.data.push(null);
      while (ds.data.length > n) ds.data.shift();
    }
    // Processes gone for the whole window leave the legend.
    c.data.datasets = c.data.datasets.filter((d) => d.data.some((v) => v !== null));
    c.update("none");
  }

  function hostBox(host) {
    const id = "host-" + host.host;
    let box = document.getElementById(id);
    if (!box) {
      box = el("div", { id, class: "host", "data-host": host.host });
      box.append(el("h3", {}, host.host), el("p", { class: "state" }),
        el("table", { class: "watchers" }), el("div", { class: "charts" }));
      document.getElementById("hosts").append(box);
    }
    return box;
  }

  function watcherRow(box, host, w) {
    const table = box.querySelector("table.watchers");
    if (!table.rows.length) {
      const head = table.insertRow();
      for (const h of ["watcher", "status", "processes", "flapping", "restarts", "youngest", "oldest", "actions"]) head.append(el("th", {}, h));
    }
    let row = table.querySelector(`tr[data-watcher="${CSS.escape(w.name)}"]`);
    if (!row) {
      row = table.insertRow();
      row.setAttribute("data-watcher", w.name);
      for (let i = 0; i < 7; i++) row.insertCell();
      const cell = row.insertCell();
      cell.append(actionForm({ op: "reload", host: host.host, watcher: w.name }, "Reload…"), " ",
        actionForm({ op: "restart", host: host.host, watcher: w.name }, "Restart…"));
    }
    const ages = w.processes.map((p) => p.age).filter((a) => a != null);
    const cells = [w.name, w.status, `${w.processes.length} / ${w.numprocesses}`, w.flapping, w.restarts,
      ages.length ? age(Math.min(...ages)) : "", ages.length ? age(Math.max(...ages)) : ""];
    cells.forEach((text, i) => { row.cells[i].textContent = text; });
    row.cells[2].setAttribute("class", "count");
  }

  function watcherCharts(box, host, w, label) {
    const key = host.host + "/" + w.name;
    if (!state.charts[key]) {
      const wrap = box.querySelector(".charts");
      const a = el("div", { class: "chart" }), b = el("div", { class: "chart" });
      const ca = el("canvas", { "data-chart": key + " cpu" }), cb = el("canvas", { "data-chart": key + " rss" });
      a.append(ca); b.append(cb); wrap.append(a, b);
      state.charts[key] = { cpu: chart(ca, w.name + ": CPU %"), rss: chart(cb, w.name + ": RSS MB") };
    }
    const cpu = {}, rss = {};
    for (const p of w.processes) { cpu[p.pid] = p.cpu; rss[p.pid] = mb(p.rss); }
    push(state.charts[key].cpu, label, cpu);
    push(state.charts[key].rss, label, rss);
  }

  function apps(hosts) {
    const totals = {};
    for (const h of hosts) if (h.up) for (const w of h.watchers) if (w.scalable) {
      const t = totals[w.name] || (totals[w.name] = { processes: 0, hosts: [] });
      t.processes += w.processes.length; t.hosts.push(h.host);
    }
    const body = document.querySelector("#apps tbody");
    for (const [name, t] of Object.entries(totals)) {
      let row = body.querySelector(`tr[data-app="${CSS.escape(name)}"]`);
      if (!row) {
        row = body.insertRow(); row.setAttribute("data-app", name);
        row.insertCell(); row.insertCell(); row.insertCell();
        const f = actionForm({ op: "scale", watcher: name }, "Scale…");
        f.insertBefore(el("input", { type: "number", name: "count", min: "0", step: "1", required: "", "aria-label": "total processes of " + name }), f.lastChild);
        row.insertCell().append(f);
      }
      row.cells[0].textContent = name; row.cells[1].textContent = t.processes; row.cells[2].textContent = t.hosts.join(", ");
    }
  }

  function requests(hosts, label) {
    const body = document.querySelector("#requests tbody");
    for (const h of hosts) for (const [app, r] of Object.entries(h.apps || {})) {
      const key = app + "@" + h.host;
      let row = body.querySelector(`tr[data-key="${CSS.escape(key)}"]`);
      if (!row) {
        row = body.insertRow(); row.setAttribute("data-key", key);
        for (let i = 0; i < 13; i++) row.insertCell();
      }
      const ps = r.per_second || {}, t = r.totals || {};
      const show = (v) => (v == null ? "–" : String(v));
      const cells = r.error ? [app, h.host, r.error] : [app, h.host, show(ps["2xx"]), show(ps["3xx"]), show(ps["4xx"]),
        show(ps["5xx"]), show(r.p50_ms), show(r.p99_ms), show(r.queue_depth), show(r.handlers_connected),
        show(t["502"]), show(t["503"]), show(t["504"])];
      for (let i = 0; i < 13; i++) row.cells[i].textContent = cells[i] === undefined ? "" : cells[i];
      if (r.error || !r.per_second) continue;
      if (!state.charts[key]) {
        const box = el("div", { class: "chart" }), canvas = el("canvas", { "data-chart": key + " requests" });
        box.append(canvas); document.getElementById("request-charts").append(box);
        state.charts[key] = { requests: chart(canvas, app + " on " + h.host + ": requests/s") };
      }
      const series = {};
      for (const cls of ["2xx", "3xx", "4xx", "5xx"]) series[cls] = ps[cls];
      push(state.charts[key].requests, label, series, "");
    }
  }

  async function poll() {
    try {
      const response = await fetch("/api/status", { credentials: "same-origin", cache: "no-store" });
      if (response.status === 401) { window.location = "/login"; return; }
      const data = await response.json();
      const label = new Date(data.time * 1000).toLocaleTimeString();
      for (const host of data.hosts) {
        const box = hostBox(host);
        box.classList.toggle("down", !host.up);
        const st = box.querySelector(".state");
        st.textContent = host.up ? "up" : "down: " + host.error;
        st.className = "state " + (host.up ? "state-up" : "state-down");
        // A host that does not answer shows no figures: the last ones would be stale.
        box.querySelector("table.watchers").hidden = !host.up;
        box.querySelector(".charts").hidden = !host.up;
        if (host.up) for (const w of host.watchers) { watcherRow(box, host, w); watcherCharts(box, host, w, label); }
      }
      apps(data.hosts);
      requests(data.hosts, label);
      state.polls += 1; state.last = data;
      document.getElementById("updated").textContent = "updated " + label;
    } catch (e) {
      document.getElementById("updated").textContent = "the console did not answer: " + e;
    } finally {
      setTimeout(poll, 1000);
    }
  }
  poll();
})();
