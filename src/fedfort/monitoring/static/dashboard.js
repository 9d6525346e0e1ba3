// The fedfort live dashboard: polls api/run and draws the run with plain DOM and inline SVG.
//
// The data can hold attacker-chosen strings (client ids, rejection details, event bodies), so
// text only ever goes in through textContent or setAttribute; nothing is parsed as HTML.
// Numbers the server could not put in JSON (NaN, infinities) arrive as strings.
"use strict";

(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const W = 640;
  const H = 240;
  const M = { top: 14, right: 16, bottom: 34, left: 58 };
  const MAX_ROWS = 500;
  const MAX_EVENTS = 200;

  const refreshMs = Math.max(100, Number(document.body.dataset.refreshMs) || 1000);
  let lastText = null;

  const $ = (id) => document.getElementById(id);

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  // a number from the API: numbers as they are, "NaN"/"Infinity"/"-Infinity" decoded, else null
  function num(v) {
    if (typeof v === "number") return v;
    if (v === "NaN") return NaN;
    if (v === "Infinity") return Infinity;
    if (v === "-Infinity") return -Infinity;
    return null;
  }

  function finite(v) {
    return typeof v === "number" && Number.isFinite(v);
  }

  function fixed(v, digits) {
    const n = num(v);
    if (n === null) return "–";
    if (!Number.isFinite(n)) return String(n);
    return n.toFixed(digits);
  }

  // short human form of a positive quantity such as epsilon: 2.41, 0.0123, 12.3
  function short(v) {
    const n = num(v);
    if (n === null) return "–";
    if (!Number.isFinite(n)) return String(n);
    if (n === 0) return "0";
    const a = Math.abs(n);
    if (a >= 1) return String(Number(n.toFixed(2)));
    return String(Number(n.toPrecision(3)));
  }

  // 1e-05 as Python prints it (two-digit exponent)
  function sci(v) {
    const n = num(v);
    if (n === null) return "–";
    if (!Number.isFinite(n)) return String(n);
    if (n !== 0 && Math.abs(n) < 1e-3) {
      const [mant, exp] = n.toExponential().split("e");
      const sign = exp[0] === "-" ? "-" : "+";
      const digits = exp.replace(/^[+-]/, "").padStart(2, "0");
      return `${mant}e${sign}${digits}`;
    }
    return String(n);
  }

  function when(ts) {
    const n = num(ts);
    if (!finite(n)) return "–";
    // local time as YYYY-MM-DD HH:MM:SS
    const d = new Date(n * 1000);
    const two = (k) => String(k).padStart(2, "0");
    return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ` +
      `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  }

  // ---------------------------------------------------------------- charts

  function niceStep(span, count) {
    const raw = span / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    const nice = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10;
    return nice * mag;
  }

  function ticks(lo, hi, count) {
    if (!(hi > lo)) return [lo];
    const step = niceStep(hi - lo, count);
    const out = [];
    for (let t = Math.ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step) {
      out.push(Number(t.toPrecision(12)));
    }
    return out;
  }

  function tickLabel(t) {
    const a = Math.abs(t);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return t.toExponential(1);
    return String(Number(t.toPrecision(4)));
  }

  // Draw series of {round, value} points as lines with one circle per finite point.
  //   opts.yMin / opts.yMax   fixed bounds (else from the data, padded)
  //   opts.xMax               last round of the x axis (the run's target)
  //   opts.rollbacks          [{round, label}] drawn as red vertical markers
  //   opts.budget             a horizontal budget line at that value
  //   series[i].points: true  the series' circles get class "point" and data-round/data-value
  function chart(node, series, opts) {
    clear(node);
    node.setAttribute("viewBox", `0 0 ${W} ${H}`);
    node.setAttribute("preserveAspectRatio", "xMidYMid meet");
    const all = [];
    let maxRound = 1;
    for (const s of series) {
      for (const p of s.data) {
        maxRound = Math.max(maxRound, p.round);
        const v = num(p.value);
        if (finite(v)) all.push(v);
      }
    }
    const budget = num(opts.budget);
    if (finite(budget)) all.push(budget);
    const xMin = 1;
    const xMax = Math.max(2, maxRound, opts.xMax || 0);
    let yMin = opts.yMin !== undefined ? opts.yMin : Math.min(...all, 0);
    let yMax = opts.yMax !== undefined ? opts.yMax : Math.max(...all, 0);
    if (!all.length) {
      yMin = opts.yMin !== undefined ? opts.yMin : 0;
      yMax = opts.yMax !== undefined ? opts.yMax : 1;
    }
    if (opts.yMax === undefined && all.length) {
      const dataMax = Math.max(...all);
      const dataMin = Math.min(...all);
      yMax = dataMax + (dataMax - Math.min(dataMin, yMin)) * 0.08 || 1;
    }
    if (!(yMax > yMin)) yMax = yMin + 1;

    const pw = W - M.left - M.right;
    const ph = H - M.top - M.bottom;
    const x = (r) => M.left + ((r - xMin) / (xMax - xMin)) * pw;
    const y = (v) => M.top + (1 - (v - yMin) / (yMax - yMin)) * ph;
    const clampY = (v) => Math.min(M.top + ph, Math.max(M.top, y(v)));

    const axes = svg("g", { class: "axes" });
    for (const t of ticks(yMin, yMax, 5)) {
      const ty = y(t);
      axes.appendChild(svg("line", { class: "gridline", x1: M.left, x2: M.left + pw, y1: ty, y2: ty }));
      const label = svg("text", { class: "tick", x: M.left - 6, y: ty + 4, "text-anchor": "end" });
      label.textContent = tickLabel(t);
      axes.appendChild(label);
    }
    const xt = ticks(xMin, xMax, Math.min(8, xMax - xMin)).filter((t) => Number.isInteger(t));
    for (const t of xt) {
      const tx = x(t);
      axes.appendChild(svg("line", { class: "tick-mark", x1: tx, x2: tx, y1: M.top + ph, y2: M.top + ph + 4 }));
      const label = svg("text", { class: "tick", x: tx, y: M.top + ph + 16, "text-anchor": "middle" });
      label.textContent = String(t);
      axes.appendChild(label);
    }
    axes.appendChild(svg("line", { class: "axis", x1: M.left, x2: M.left, y1: M.top, y2: M.top + ph }));
    axes.appendChild(svg("line", { class: "axis", x1: M.left, x2: M.left + pw, y1: M.top + ph, y2: M.top + ph }));
    const xLabel = svg("text", { class: "axis-label", x: M.left + pw / 2, y: H - 4, "text-anchor": "middle" });
    xLabel.textContent = "round";
    axes.appendChild(xLabel);
    node.appendChild(axes);

    for (const rb of opts.rollbacks || []) {
      const rx = x(rb.round);
      const marker = svg("line", {
        class: "rollback-marker",
        "data-round": rb.round,
        x1: rx,
        x2: rx,
        y1: M.top,
        y2: M.top + ph,
      });
      const title = svg("title");
      title.textContent = rb.label;
      marker.appendChild(title);
      node.appendChild(marker);
    }

    if (finite(budget)) {
      const by = y(budget);
      node.appendChild(svg("line", {
        class: "budget-line",
        "data-value": String(budget),
        x1: M.left,
        x2: M.left + pw,
        y1: by,
        y2: by,
      }));
      const label = svg("text", { class: "budget-label", x: M.left + pw - 4, y: by - 5, "text-anchor": "end" });
      label.textContent = `budget ${short(budget)}`;
      node.appendChild(label);
    }

    for (const s of series) {
      const g = svg("g", { class: `series ${s.cls}` });
      // the line breaks at rounds without a finite value
      let segment = [];
      const segments = [segment];
      for (const p of s.data) {
        const v = num(p.value);
        if (finite(v)) {
          segment.push(`${x(p.round).toFixed(1)},${y(v).toFixed(1)}`);
        } else if (segment.length) {
          segment = [];
          segments.push(segment);
        }
      }
      for (const seg of segments) {
        if (seg.length > 1) g.appendChild(svg("polyline", { class: "line", points: seg.join(" ") }));
      }
      for (const p of s.data) {
        const v = num(p.value);
        if (v === null) continue;
        const title = svg("title");
        title.textContent = `${s.label}, round ${p.round}: ${String(v)}`;
        if (!Number.isFinite(v)) {
          // a diverged value: a hollow marker pinned to the edge of the plot
          const marker = svg("circle", {
            class: "nonfinite",
            "data-round": p.round,
            "data-value": String(v),
            cx: x(p.round),
            cy: clampY(v > 0 ? yMax : yMin),
            r: 4,
          });
          marker.appendChild(title);
          g.appendChild(marker);
          continue;
        }
        const attrs = { cx: x(p.round), cy: y(v), r: s.points ? 3.2 : 2 };
        if (s.points) {
          attrs.class = "point";
          attrs["data-round"] = p.round;
          attrs["data-value"] = String(v);
        } else {
          attrs.class = "dot";
        }
        const c = svg("circle", attrs);
        c.appendChild(title);
        g.appendChild(c);
      }
      node.appendChild(g);
    }
  }

  // ---------------------------------------------------------------- tables

  function fillBody(table, rows) {
    const body = table.tBodies[0] || table.appendChild(document.createElement("tbody"));
    clear(body);
    for (const row of rows) body.appendChild(row);
  }

  function row(cells, attrs, cls) {
    const tr = document.createElement("tr");
    for (const [k, v] of Object.entries(attrs || {})) tr.setAttribute(k, String(v));
    if (cls) tr.className = cls;
    for (const c of cells) tr.appendChild(c instanceof Node ? c : el("td", c));
    return tr;
  }

  function emptyRow(table, text) {
    const cols = table.tHead ? table.tHead.rows[0].cells.length : 1;
    const td = el("td", text, "empty");
    td.colSpan = cols;
    const tr = document.createElement("tr");
    tr.appendChild(td);
    return tr;
  }

  // ---------------------------------------------------------------- sections

  function renderHeader(state) {
    const run = state.run || {};
    $("run-name").textContent = run.name || "run";
    document.title = `${run.name || "run"} · fedfort`;
    const status = $("status");
    const finished = run.status === "finished";
    status.textContent = finished ? "finished" : "running";
    status.className = `badge ${finished ? "finished" : "running"}`;
    $("rounds").textContent = `${run.rounds_committed ?? 0} / ${run.rounds_target ?? "?"}`;
    const parts = [];
    if (state.aggregation) parts.push(`aggregation ${state.aggregation}`);
    parts.push(`secure aggregation ${state.secure_aggregation || "none"}`);
    const p = state.privacy;
    parts.push(p ? `privacy ${p.mode}${p.dp_sgd ? " + DP-SGD" : ""}` : "no differential privacy");
    if (run.fedfort_version) parts.push(`fedfort ${run.fedfort_version}`);
    if (run.identity) parts.push(`identity ${String(run.identity).slice(0, 12)}`);
    $("summary").textContent = parts.join(" · ");
    $("run-dir").textContent = run.dir || "";
    $("updated").textContent = `${finished ? "final state" : "live"} · updated ${new Date().toLocaleTimeString()}`;
  }

  function rollbacksOf(rounds) {
    return rounds
      .filter((r) => r.rollback)
      .map((r) => {
        const rb = r.rollback;
        const to = typeof rb === "object" && rb !== null ? rb.to_version : undefined;
        const reason = typeof rb === "object" && rb !== null && rb.reason ? `: ${rb.reason}` : "";
        return { round: r.round, label: `round ${r.round}: rolled back to v${to ?? "?"}${reason}` };
      });
  }

  function renderCharts(state) {
    const rounds = state.rounds || [];
    const target = (state.run || {}).rounds_target || 0;
    const rollbacks = rollbacksOf(rounds);
    const pick = (key) => rounds.filter((r) => r[key] !== null && r[key] !== undefined)
      .map((r) => ({ round: r.round, value: r[key] }));
    // the clients' federated evaluation on their own hold-outs, when the run has one
    const federated = (key, label) => (pick(key).length
      ? [{ cls: "federated", label, points: true, data: pick(key) }] : []);
    chart($("accuracy-chart"), [{ cls: "accuracy", label: "accuracy", points: true, data: pick("accuracy") },
      ...federated("federated_accuracy", "federated accuracy")],
    { yMin: 0, yMax: 1, xMax: target, rollbacks });
    chart($("loss-chart"), [{ cls: "loss", label: "loss", points: true, data: pick("loss") },
      ...federated("federated_loss", "federated loss")],
    { yMin: 0, xMax: target, rollbacks });

    const rep = rounds.filter((r) => r.reputation && Object.keys(r.reputation).length);
    const repFigure = $("reputation-figure");
    if (rep.length) {
      repFigure.hidden = false;
      const stat = (k) => rep.map((r) => ({ round: r.round, value: r.reputation[k] }));
      chart($("reputation-chart"), [
        { cls: "rep-max", label: "max", data: stat("max") },
        { cls: "rep-median", label: "median", data: stat("median") },
        { cls: "rep-min", label: "min", data: stat("min") },
      ], { yMin: 0, yMax: 1, xMax: target });
      const last = rep[rep.length - 1].reputation;
      $("reputation-summary").textContent =
        `after round ${rep[rep.length - 1].round}: min ${fixed(last.min, 3)}, ` +
        `median ${fixed(last.median, 3)}, max ${fixed(last.max, 3)}, mean ${fixed(last.mean, 3)}`;
    } else {
      repFigure.hidden = true;
      clear($("reputation-chart"));
      $("reputation-summary").textContent = "reputation is not enabled in this run";
    }
  }

  function renderDpSgd(p) {
    const figure = $("dp-sgd-figure");
    const clients = (p && p.dp_sgd_clients) || [];
    if (!clients.length) {
      figure.hidden = true;
      return;
    }
    figure.hidden = false;
    const target = p.dp_sgd_target_epsilon;
    const worst = Math.max(...clients.map((c) => (finite(num(c.epsilon)) ? num(c.epsilon) : 0)));
    const budget = target !== null && target !== undefined ? ` of budget ${short(target)}` : "";
    const stopped = clients.filter((c) => c.stopped_round !== null && c.stopped_round !== undefined);
    $("dp-sgd-summary").textContent = `DP-SGD: largest client ε ${short(worst)}${budget}` +
      ` (δ = ${sci(p.dp_sgd_delta)}, one record of one client)` +
      (stopped.length ? ` · ${stopped.length} client(s) stopped, budget spent` : "");
    const table = $("dp-sgd-table");
    fillBody(table, clients.slice(0, 5000).map((c) => row([
      c.id,
      finite(num(c.epsilon)) ? fixed(num(c.epsilon), 3) : "–",
      c.stopped_round === null || c.stopped_round === undefined ? "–" : `round ${c.stopped_round}`,
    ], { "data-client": c.id }, c.stopped_round ? "quarantined" : "")));
  }

  function renderPrivacy(state) {
    const p = state.privacy;
    renderDpSgd(p);
    const figure = $("epsilon-figure");
    const node = $("epsilon-chart");
    const summary = $("epsilon-summary");
    if (!p) {
      summary.textContent = "no differential privacy";
      clear(node);
      figure.hidden = true;
      return;
    }
    const rounds = state.rounds || [];
    const points = rounds.filter((r) => r.epsilon !== null && r.epsilon !== undefined)
      .map((r) => ({ round: r.round, value: r.epsilon }));
    const spent = p.epsilon_spent;
    const target = p.target_epsilon;
    const delta = p.delta;
    let text;
    if (spent === null || spent === undefined) {
      text = p.dp_sgd && (p.mode === "none" || !p.mode)
        ? "DP-SGD at the clients (sample-level); no run-level ε accounted"
        : `ε not spent yet${target !== null && target !== undefined ? ` (budget ${short(target)})` : ""}`;
    } else {
      const budget = target !== null && target !== undefined ? ` of ${short(target)}` : " (no budget set)";
      text = `ε = ${short(spent)}${budget} (δ = ${sci(delta)})`;
    }
    if (p.mode && p.mode !== "none") text += ` · ${p.mode} DP`;
    if (p.dp_sgd && p.mode && p.mode !== "none") text += " + DP-SGD";
    summary.textContent = text;
    summary.className = finite(num(spent)) && finite(num(target)) && num(spent) > num(target) ? "over" : "";
    if (!points.length && (target === null || target === undefined)) {
      clear(node);
      figure.hidden = true;
      return;
    }
    figure.hidden = false;
    chart(node, [{ cls: "epsilon", label: "ε", points: true, data: points }],
      { yMin: 0, xMax: (state.run || {}).rounds_target || 0, budget: target });
  }

  function renderAudit(state) {
    const a = state.audit || {};
    const node = $("audit-status");
    const detail = $("audit-detail");
    detail.textContent = "";
    if (a.present === false) {
      node.textContent = "no audit log";
      node.className = "absent";
      return;
    }
    if (a.present === null || a.present === undefined || a.ok === null || a.ok === undefined) {
      node.textContent = "audit log not verified";
      node.className = "absent";
      return;
    }
    if (a.ok) {
      node.textContent = `verified: ${a.entries} entries, head ${String(a.head_hash || "").slice(0, 16)}…`;
      node.className = "ok";
    } else if (a.bad_seq !== null && a.bad_seq !== undefined) {
      const kind = a.bad_kind ? ` (${a.bad_kind})` : "";
      node.textContent = `FAILED at entry ${a.bad_seq}${kind}: ${a.problem || "unknown problem"}`;
      node.className = "failed";
    } else {
      node.textContent = `FAILED: ${a.problem || "unknown problem"}`;
      node.className = "failed";
    }
    const parts = [];
    if (a.head_seq !== null && a.head_seq !== undefined) parts.push(`head entry ${a.head_seq}`);
    if (Array.isArray(a.keys) && a.keys.length) parts.push(`signed by ${a.keys.join(", ")}`);
    if (a.public_key_file) parts.push(`pinned key ${a.public_key_file}`);
    detail.textContent = parts.join(" · ");
  }

  function renderClients(state) {
    const table = $("clients-table");
    const clients = state.clients || [];
    if (!clients.length) {
      fillBody(table, [emptyRow(table, "no client has taken part yet")]);
      return;
    }
    fillBody(table, clients.slice(0, 5000).map((c) => {
      const rep = num(c.reputation);
      const cls = [c.quarantined ? "quarantined" : "", c.flagged > 0 ? "flagged" : ""].join(" ").trim();
      const attrs = { "data-client": c.id };
      if (rep !== null) attrs["data-reputation"] = String(rep);
      return row([
        c.id,
        rep === null ? "–" : fixed(rep, 3),
        c.quarantined ? "yes" : "no",
        c.selected,
        c.accepted,
        c.rejected,
        c.flagged,
        c.last_round ?? "–",
      ], attrs, cls);
    }));
  }

  function renderRounds(state) {
    const table = $("rounds-table");
    const rounds = (state.rounds || []).slice(-MAX_ROWS).reverse();
    if (!rounds.length) {
      fillBody(table, [emptyRow(table, "no round committed yet")]);
      return;
    }
    fillBody(table, rounds.map((r) => row([
      r.round,
      fixed(r.accuracy, 4),
      fixed(r.loss, 4),
      r.participants ?? "–",
      r.selected,
      r.dropped,
      r.rejected,
      r.flagged,
      r.epsilon === null || r.epsilon === undefined ? "–" : short(r.epsilon),
      r.aggregation || "–",
      r.duration_s === null || r.duration_s === undefined ? "–" : `${fixed(r.duration_s, 2)} s`,
    ], { "data-round": r.round }, r.rollback ? "rollback" : (r.rejected || r.flagged ? "flagged" : ""))));
  }

  function renderRejections(state) {
    const counts = $("rejection-counts");
    clear(counts);
    const entries = Object.entries(state.rejection_counts || {});
    if (!entries.length) counts.appendChild(el("li", "no update rejected", "muted"));
    for (const [reason, n] of entries) {
      const li = el("li", `${reason}: ${n}`);
      li.setAttribute("data-reason", reason);
      li.setAttribute("data-count", String(n));
      counts.appendChild(li);
    }
    const table = $("rejections-table");
    const rows = (state.rejections || []).slice(-MAX_ROWS).reverse();
    if (!rows.length) {
      fillBody(table, [emptyRow(table, "none")]);
      return;
    }
    fillBody(table, rows.map((r) => row(
      [r.round, r.client_id, r.reason, r.detail ?? ""],
      { "data-client": r.client_id, "data-round": r.round },
    )));
  }

  function renderModels(state) {
    const pending = state.pending_rollback;
    const notice = $("pending-rollback");
    if (pending) {
      const reason = pending.reason ? `: ${pending.reason}` : "";
      notice.textContent = `rollback to v${pending.to_version ?? "?"} pending, applied when the run ` +
        `continues${reason}`;
      notice.hidden = false;
    } else {
      notice.textContent = "";
      notice.hidden = true;
    }
    const table = $("models-table");
    const models = (state.models || []).slice(-MAX_ROWS).reverse();
    if (!models.length) {
      fillBody(table, [emptyRow(table, "no model version yet")]);
      return;
    }
    fillBody(table, models.map((m) => {
      const rb = m.rollback;
      let note = m.version === 0 ? "initial model" : "";
      if (rb) note = `rolled back to v${typeof rb === "object" && rb !== null ? rb.to_version ?? "?" : "?"}`;
      const tr = row([
        `v${m.version}`,
        `${String(m.sha256 || "").slice(0, 16)}…`,
        fixed(m.accuracy, 4),
        fixed(m.loss, 4),
        when(m.created),
        note,
      ], { "data-version": m.version }, rb ? "rollback" : "");
      tr.cells[1].setAttribute("title", String(m.sha256 || ""));
      tr.cells[1].className = "mono";
      if (rb && typeof rb === "object" && rb.reason) tr.setAttribute("title", String(rb.reason));
      return tr;
    }));
  }

  function summarize(body) {
    if (!body || typeof body !== "object") return body === undefined || body === null ? "" : String(body);
    const parts = [];
    for (const [k, v] of Object.entries(body)) {
      let text;
      if (v === null || typeof v === "number" || typeof v === "boolean") text = String(v);
      else if (typeof v === "string") text = v.length > 24 && /^[0-9a-f]+$/.test(v) ? `${v.slice(0, 12)}…` : v;
      else text = Array.isArray(v) ? `[${v.length}]` : "{…}";
      if (text.length > 80) text = `${text.slice(0, 77)}…`;
      parts.push(`${k}=${text}`);
    }
    const all = parts.join(" ");
    return all.length > 240 ? `${all.slice(0, 237)}…` : all;
  }

  function renderEvents(state) {
    const list = $("events-list");
    clear(list);
    const events = state.events || [];
    if (!events.length) {
      list.appendChild(el("li", "no lifecycle event logged", "muted"));
      return;
    }
    const shown = events.slice(-MAX_EVENTS).reverse();
    for (const e of shown) {
      const li = document.createElement("li");
      li.setAttribute("data-seq", String(e.seq));
      li.setAttribute("data-kind", String(e.kind));
      li.className = `event ${/^[a-z_]+$/.test(String(e.kind)) ? `kind-${e.kind}` : ""}`;
      li.appendChild(el("span", e.kind, "kind"));
      li.appendChild(el("span", e.round === null || e.round === undefined ? "" : `round ${e.round}`, "round"));
      li.appendChild(el("span", when(e.ts), "time muted"));
      li.appendChild(el("span", summarize(e.body), "body"));
      try {
        li.setAttribute("title", JSON.stringify(e.body));
      } catch (_) {
        // a body that does not serialise keeps no tooltip
      }
      list.appendChild(li);
    }
    if (events.length > shown.length) {
      list.appendChild(el("li", `${events.length - shown.length} earlier events not shown`, "muted"));
    }
  }

  function renderConfig(state) {
    $("config").textContent = JSON.stringify(state.config || {}, null, 2);
  }

  const SECTIONS = [
    renderHeader, renderCharts, renderPrivacy, renderAudit, renderClients, renderRounds,
    renderRejections, renderModels, renderEvents, renderConfig,
  ];

  function render(state) {
    const problems = [];
    for (const section of SECTIONS) {
      try {
        section(state);
      } catch (err) {
        problems.push(`${section.name}: ${err && err.message ? err.message : err}`);
      }
    }
    return problems;
  }

  function showError(text) {
    const node = $("error");
    node.textContent = text || "";
    node.hidden = !text;
  }

  async function poll() {
    try {
      const response = await fetch("api/run", { cache: "no-store", headers: { Accept: "application/json" } });
      const text = await response.text();
      if (!response.ok) {
        let message = text;
        try {
          message = JSON.parse(text).error || text;
        } catch (_) {
          // not JSON: show the text as it is
        }
        showError(`the run cannot be read (HTTP ${response.status}): ${message}`);
      } else if (text !== lastText) {
        const problems = render(JSON.parse(text));
        lastText = problems.length ? null : text;
        showError(problems.length ? `could not draw ${problems.join("; ")}` : "");
      } else {
        showError("");
        const finished = $("status").textContent === "finished";
        $("updated").textContent = `${finished ? "final state" : "live"} · updated ${new Date().toLocaleTimeString()}`;
      }
      document.body.classList.remove("offline");
    } catch (err) {
      document.body.classList.add("offline");
      showError(`the dashboard server cannot be reached (${err && err.message ? err.message : err}); retrying`);
    } finally {
      setTimeout(poll, refreshMs);
    }
  }

  $("refresh").textContent = `${refreshMs / 1000} s`;
  poll();
})();
