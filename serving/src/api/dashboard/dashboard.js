// The dashboard page: follows one board's Server-Sent Events and draws its panels.
// The credential comes from the fragment (#key=...), which never reaches a server, or
// from the form, and is kept for this tab only (sessionStorage).
"use strict";

const KEPT = "tidemark.credential";
const $ = (id) => document.getElementById(id);

function boardId() {
  const parts = location.pathname.split("/").filter(Boolean);
  return parts.length > 1 ? decodeURIComponent(parts[1]) : "operations";
}

function credential() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const given = fragment.get("key") || fragment.get("token");
  if (given) {
    sessionStorage.setItem(KEPT, given);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(KEPT);
}

function setStatus(text, kind) {
  const status = $("status");
  status.textContent = text;
  status.className = kind || "";
}

function askForCredential(reason) {
  sessionStorage.removeItem(KEPT);
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = reason || "";
  setStatus("signed out", "down");
}

function authorized(key) {
  return { Authorization: "Bearer " + key };
}

// ---- figures ----

function formatted(value, unit, label) {
  if (value === null || value === undefined) return "\u2013";
  if (typeof value !== "number") return String(value);
  switch (unit) {
    case "cents": {
      const currency = /^[A-Z]{3}$/.test(label || "") ? label : null;
      const amount = value / 100;
      return currency
        ? amount.toLocaleString(undefined, { style: "currency", currency })
        : amount.toLocaleString(undefined, { maximumFractionDigits: 2 });
    }
    case "ratio":
      return (value * 100).toLocaleString(undefined, { maximumFractionDigits: 1 }) + " %";
    case "ms":
      return value.toLocaleString(undefined, { maximumFractionDigits: 1 }) + " ms";
    case "per_second":
      return value.toLocaleString(undefined, { maximumFractionDigits: 1 }) + " /s";
    case "days":
      return value.toLocaleString(undefined, { maximumFractionDigits: 1 }) + " d";
    default:
      return value.toLocaleString(undefined, { maximumFractionDigits: 2 });
  }
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function clockTime(millis) {
  return new Date(millis).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// ---- panels ----

class PanelView {
  constructor(definition) {
    this.definition = definition;
    this.root = element("div", "panel chart-" + definition.chart);
    this.root.dataset.panel = definition.id;
    if (definition.chart === "timeseries" || definition.chart === "table") this.root.classList.add("wide");
    this.root.append(element("h2", null, definition.title));
    this.body = element("div", "body");
    this.summary = element("div", "summary");
    this.root.append(this.body, this.summary);
    this.plot = null;
  }

  show(value) {
    if (!value) return;
    if (value.error) {
      this.destroyPlot();
      this.body.replaceChildren(element("div", "error", value.error));
      this.summary.textContent = "";
      return;
    }
    const draw = {
      stat: () => this.stat(value),
      timeseries: () => this.timeseries(value),
      bar: () => this.bars(value),
      table: () => this.table(value),
    }[this.definition.chart];
    draw();
  }

  stat(value) {
    const unit = this.definition.unit;
    const rows = value.rows;
    const figures = element("div", "figures");
    if (rows.length === 0) {
      figures.append(element("div", "figure", "\u2013"));
    } else if (value.columns.length === 1) {
      const figure = element("div", "figure", formatted(rows[0][0], unit));
      figure.dataset.value = rows[0][0] === null ? "" : String(rows[0][0]);
      figures.append(figure);
    } else {
      for (const row of rows) {
        const line = element("div");
        const label = String(row[0]);
        const figure = element("span", "figure", formatted(row[row.length - 1], unit, label));
        figure.dataset.value = String(row[row.length - 1]);
        line.append(element("span", "label", label), figure);
        figures.append(line);
      }
    }
    this.body.replaceChildren(figures);
  }

  bars(value) {
    const unit = this.definition.unit;
    const rows = value.rows.filter((row) => typeof row[1] === "number");
    if (rows.length === 0) {
      this.body.replaceChildren(element("div", "empty", "nothing yet"));
      return;
    }
    const longest = Math.max(...rows.map((row) => Math.abs(row[1])), 1e-9);
    const bars = element("div", "bars");
    for (const row of rows) {
      const bar = element("div", "bar");
      const track = element("div", "track");
      const fill = element("div", "fill");
      fill.style.width = ((Math.abs(row[1]) / longest) * 100).toFixed(1) + "%";
      track.append(fill);
      bar.append(element("span", "name", String(row[0])), track, element("span", "num", formatted(row[1], unit)));
      bars.append(bar);
    }
    this.body.replaceChildren(bars);
  }

  table(value) {
    if (value.rows.length === 0) {
      this.body.replaceChildren(element("div", "empty", "nothing yet"));
      return;
    }
    const table = element("table");
    const head = element("tr");
    for (const column of value.columns) head.append(element("th", null, column.name));
    table.append(head);
    for (const row of value.rows) {
      const line = element("tr");
      row.forEach((cell, i) => {
        const money = this.definition.unit === "cents" || value.columns[i].name.endsWith("_cents");
        const text = typeof cell === "number" ? formatted(cell, money ? "cents" : null) : cell ?? "\u2013";
        line.append(element("td", typeof cell === "number" ? "num" : null, text));
      });
      table.append(line);
    }
    this.body.replaceChildren(table);
  }

  timeseries(value) {
    const columns = value.columns;
    const rows = value.rows.slice().sort((a, b) => a[0] - b[0]);
    const data = [rows.map((row) => row[0] / 1000)];
    for (let i = 1; i < columns.length; i++) data.push(rows.map((row) => row[i]));
    const marks = value.anomalies || [];
    this.marks = marks;
    if (rows.length === 0) {
      this.destroyPlot();
      this.body.replaceChildren(element("div", "empty", "nothing yet"));
      this.summary.textContent = "";
      return;
    }
    const last = rows[rows.length - 1];
    const latest = columns.slice(1).map((column, i) => column.name + " " + formatted(last[i + 1], this.definition.unit));
    let summary = clockTime(last[0]) + ": " + latest.join(", ");
    if (marks.length > 0) {
      const [minute, series, anomalous, lower, upper] = marks[marks.length - 1];
      summary += " \u00b7 " + marks.length + " anomal" + (marks.length === 1 ? "y" : "ies") +
        ", latest " + series + " " + anomalous + " at " + clockTime(minute) + " (band " + lower + "\u2013" + upper + ")";
      this.summary.classList.add("anomaly");
    } else {
      this.summary.classList.remove("anomaly");
    }
    this.summary.textContent = summary;
    if (this.plot && this.plot.series.length === data.length) {
      this.plot.setData(data);
      return;
    }
    this.destroyPlot();
    const palette = ["#2563eb", "#f59e0b", "#10b981", "#8b5cf6"];
    const pad = columns[0].type === "date" ? 43200 : 1800;
    // Wide enough for the longest label.
    const labels = (plot, values) => (values ? Math.max(40, ...values.map((v) => String(v).length * 8 + 18)) : 50);
    const options = {
      width: Math.max(this.body.clientWidth, 200),
      height: 190,
      legend: { show: true, live: false },
      // One point is a moment, not (as uPlot would have it) a thousand days: half an
      // hour either side of a minute, half a day of a day.
      scales: { x: { time: true, range: (plot, min, max) => (plot.data[0].length <= 1 ? [min - pad, min + pad] : [min, max]) } },
      series: [{}].concat(
        columns.slice(1).map((column, i) => ({ label: column.name, stroke: palette[i % palette.length], width: 2 }))
      ),
      axes: [{ stroke: "#888" }, { stroke: "#888", size: labels }],
      hooks: { draw: [(plot) => this.drawMarks(plot)] },
    };
    this.body.replaceChildren();
    this.plot = new uPlot(options, data, this.body);
  }

  // Anomalies as red rings on their series.
  drawMarks(plot) {
    const ctx = plot.ctx;
    ctx.save();
    ctx.strokeStyle = "#dc2626";
    ctx.lineWidth = 2 * devicePixelRatio;
    for (const [minute, , value] of this.marks || []) {
      const x = plot.valToPos(minute / 1000, "x", true);
      const y = plot.valToPos(value, "y", true);
      ctx.beginPath();
      ctx.arc(x, y, 6 * devicePixelRatio, 0, 2 * Math.PI);
      ctx.stroke();
    }
    ctx.restore();
  }

  resize() {
    if (this.plot) this.plot.setSize({ width: Math.max(this.body.clientWidth, 200), height: 190 });
  }

  destroyPlot() {
    if (this.plot) {
      this.plot.destroy();
      this.plot = null;
    }
  }
}

// ---- the board ----

const views = new Map();

function build(board) {
  document.title = board.title + " \u00b7 tidemark";
  $("description").textContent = board.description;
  const panels = $("panels");
  views.forEach((view) => view.destroyPlot());
  views.clear();
  panels.replaceChildren();
  for (const definition of board.panels) {
    const view = new PanelView(definition);
    views.set(definition.id, view);
    panels.append(view.root);
    view.show(definition.value);
  }
}

function update(change) {
  for (const panel of change.panels) {
    const view = views.get(panel.id);
    if (view) view.show(panel.value);
  }
}

async function listBoards(key, current) {
  const answer = await fetch("/api/v1/dashboards", { headers: authorized(key) });
  if (answer.status === 401 || answer.status === 403) {
    const problem = await answer.json().catch(() => ({}));
    askForCredential(problem.detail || "that credential may not read dashboards");
    return false;
  }
  if (!answer.ok) throw new Error("listing dashboards: " + answer.status);
  const { dashboards } = await answer.json();
  const nav = $("boards");
  nav.replaceChildren();
  for (const board of dashboards) {
    const link = element("a", null, board.title);
    link.href = "/dashboard/" + encodeURIComponent(board.id);
    if (board.id === current) link.setAttribute("aria-current", "page");
    nav.append(link);
  }
  return true;
}

// Reads `body` as Server-Sent Events, calling `on(type, data)` for each.
async function readEvents(body, on) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      let type = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") type = text;
        else if (field === "data") data.push(text);
      }
      if (data.length > 0) on(type, JSON.parse(data.join("\n")));
    }
  }
}

async function follow(key, id) {
  let wait = 500;
  for (;;) {
    let ended = null;
    try {
      const answer = await fetch("/api/v1/dashboards/" + encodeURIComponent(id) + "/stream", {
        headers: Object.assign({ Accept: "text/event-stream" }, authorized(key)),
        cache: "no-store",
      });
      if (answer.status === 401 || answer.status === 403) {
        const problem = await answer.json().catch(() => ({}));
        askForCredential(problem.detail);
        return;
      }
      if (answer.status === 404) {
        setStatus("no dashboard " + id, "down");
        return;
      }
      if (!answer.ok) throw new Error("status " + answer.status);
      wait = 500;
      await readEvents(answer.body, (type, data) => {
        if (type === "end") {
          // The board was deleted, or the credential no longer holds: the next
          // request says which (404, 401 or 403).
          ended = data;
          return;
        }
        if (type === "snapshot") build(data);
        else if (type === "update") update(data);
        setStatus("live \u00b7 frontier " + data.frontier, "live");
      });
    } catch (error) {
      // Dropped (the server restarted, the network blinked): try again shortly.
    }
    setStatus(ended ? ended.detail : "reconnecting", "down");
    await new Promise((resolve) => setTimeout(resolve, wait));
    wait = Math.min(wait * 2, 10000);
  }
}

async function start() {
  const key = credential();
  if (!key) {
    askForCredential();
    return;
  }
  $("sign-in").hidden = true;
  const id = boardId();
  try {
    if (!(await listBoards(key, id))) return;
  } catch (error) {
    setStatus("unreachable", "down");
  }
  follow(key, id);
}

$("sign-in").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("credential").value.trim();
  if (key) {
    sessionStorage.setItem(KEPT, key);
    $("credential").value = "";
    start();
  }
});

let resizing = null;
window.addEventListener("resize", () => {
  clearTimeout(resizing);
  resizing = setTimeout(() => views.forEach((view) => view.resize()), 100);
});

start();
