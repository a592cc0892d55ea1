// The r1 dashboard: runs and jobs, live curves, GRPO samples, chat, health.
// Every piece of text that comes from the server is put in the page as a text node
// (`el` below never parses markup), so a completion containing `<script>` shows as text.
"use strict";

const KEY_STORE = "r1-api-key";
let apiKey = sessionStorage.getItem(KEY_STORE) || "";
// Work of the current view (streams, timers) stopped when the view changes.
let viewCleanups = [];

// ---------- DOM and HTTP helpers ----------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (apiKey) h["Authorization"] = "Bearer " + apiKey;
  return h;
}

class ApiError extends Error {}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  const res = await fetch(path, opts);
  const type = res.headers.get("content-type") || "";
  const body = type.includes("json") ? await res.json() : await res.text();
  if (!res.ok) {
    const message = body && body.error ? body.error.message : String(body);
    throw new ApiError(res.status === 401 ? "The server wants an API key (top right): " + message : message);
  }
  return body;
}

// Reads a server-sent event stream with fetch (EventSource cannot send the API key).
// Calls onEvent(event, data) per event; resolves when the stream ends.
async function readEvents(path, options, onEvent, signal) {
  const opts = Object.assign({}, options || {}, { signal });
  opts.headers = headers(opts.headers);
  const res = await fetch(path, opts);
  if (!res.ok) {
    let message = res.statusText;
    try { message = (await res.json()).error.message; } catch (_) { /* not JSON */ }
    throw new ApiError(message);
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
      let event = "message";
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(event, data.join("\n"));
    }
  }
}

function notice(message) {
  const box = document.getElementById("notice");
  box.replaceChildren();
  if (message) box.appendChild(el("p", { class: "error" }, message));
}

function fmtNum(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(3) : v.toFixed(4).replace(/\.?0+$/, "");
}

function fmtSecs(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

// Splits a completion into reasoning and answer: text inside <think>…</think> is
// reasoning; a completion that closes a block it never opened (the chat template opened
// it) starts in reasoning; an unclosed block at the end is reasoning.
function splitReasoning(text) {
  const open = text.indexOf("<think>");
  const close = text.indexOf("</think>");
  if (close >= 0 && (open < 0 || open > close)) {
    return { reasoning: text.slice(0, close).trim(), answer: text.slice(close + 8).trim() };
  }
  if (open >= 0) {
    const end = text.indexOf("</think>", open);
    const before = text.slice(0, open);
    if (end < 0) return { reasoning: text.slice(open + 7).trim(), answer: before.trim() };
    return { reasoning: text.slice(open + 7, end).trim(), answer: (before + text.slice(end + 8)).trim() };
  }
  return { reasoning: null, answer: text };
}

function reasoningBlock(reasoning, open) {
  const d = el("details", { class: "reasoning", open: open || false },
    el("summary", {}, "Reasoning (" + reasoning.length + " characters)"),
    el("div", { class: "text" }, reasoning));
  return d;
}

function completionView(text) {
  const { reasoning, answer } = splitReasoning(text || "");
  return el("div", {},
    reasoning !== null ? reasoningBlock(reasoning, false) : null,
    el("div", { class: "answer" }, el("div", { class: "muted" }, "Answer"), el("div", { class: "text" }, answer)));
}

// ---------- Router ----------

const views = { runs: viewRuns, run: viewRun, new: viewNew, chat: viewChat, health: viewHealth };

function route() {
  for (const stop of viewCleanups) { try { stop(); } catch (_) { /* already stopped */ } }
  viewCleanups = [];
  notice("");
  const hash = location.hash.replace(/^#\/?/, "") || "runs";
  const [name, ...rest] = hash.split("/");
  const view = views[name] || viewRuns;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.view === (name === "run" ? "runs" : name)) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const main = document.getElementById("main");
  main.replaceChildren();
  Promise.resolve(view(main, rest.map(decodeURIComponent))).catch((e) => notice(e.message));
}

function onCleanup(f) { viewCleanups.push(f); }

function every(ms, f) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try { await f(); } catch (e) { notice(e.message); }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  onCleanup(() => { stopped = true; clearTimeout(timer); });
  return tick();
}

// ---------- Runs ----------

function statusCell(run) {
  const label = run.cancel_requested && !["cancelled", "succeeded", "failed"].includes(run.status)
    ? run.status + " (cancelling)" : run.status;
  return el("span", { class: "status status-" + run.status }, label);
}

function jobActions(run, after) {
  if (!run.job) return null;
  const act = async (what) => {
    try {
      await api("/v1/jobs/" + encodeURIComponent(run.job) + "/" + what, { method: "POST" });
      await after();
    } catch (e) { notice(e.message); }
  };
  const live = run.status === "running" || run.status === "queued";
  const resumable = ["cancelled", "interrupted", "failed"].includes(run.status);
  return el("span", { class: "row" },
    live ? el("button", { type: "button", class: "danger", "data-action": "cancel", onclick: () => act("cancel") }, "Cancel") : null,
    resumable ? el("button", { type: "button", "data-action": "resume", onclick: () => act("resume") }, "Resume") : null);
}

async function viewRuns(main) {
  main.appendChild(el("h1", {}, "Runs and jobs"));
  const body = el("tbody", {});
  const compare = el("button", { type: "button", disabled: true }, "Overlay the two selected");
  const selected = new Set();
  compare.addEventListener("click", () => {
    const [a, b] = [...selected];
    location.hash = "#/run/" + encodeURIComponent(a) + "/" + encodeURIComponent(b);
  });
  main.appendChild(el("div", { class: "table-wrap" }, el("table", { id: "runs-table" },
    el("thead", {}, el("tr", {}, ["", "Run", "Source", "Status", "Stage", "Step", "Elapsed", "ETA", "Actions"].map((h) => el("th", { scope: "col" }, h)))),
    body)));
  main.appendChild(el("div", { class: "row" }, compare,
    el("span", { class: "muted" }, "Runs update live; jobs start from “New job”.")));
  const refresh = async () => {
    const runs = (await api("/v1/runs")).data;
    body.replaceChildren();
    if (!runs.length) body.appendChild(el("tr", {}, el("td", { colspan: 9, class: "muted" }, "No runs yet.")));
    for (const r of runs) {
      const box = el("input", { type: "checkbox", "aria-label": "select " + r.name, checked: selected.has(r.id) });
      box.addEventListener("change", () => {
        if (box.checked) selected.add(r.id); else selected.delete(r.id);
        compare.disabled = selected.size !== 2;
      });
      const step = r.step === null || r.step === undefined ? "–" : r.step + (r.total_steps ? " / " + r.total_steps : "");
      body.appendChild(el("tr", { "data-run": r.id },
        el("td", {}, box),
        el("td", {}, el("a", { href: "#/run/" + encodeURIComponent(r.id) }, r.name)),
        el("td", {}, r.source),
        el("td", {}, statusCell(r)),
        el("td", {}, r.stage || "–"),
        el("td", {}, step),
        el("td", {}, fmtSecs(r.elapsed_seconds)),
        el("td", {}, fmtSecs(r.eta_seconds)),
        el("td", {}, jobActions(r, refresh))));
    }
    compare.disabled = selected.size !== 2;
  };
  await every(2000, refresh);
}

// ---------- One run: curves, samples, sets ----------

// Metrics shown by default, in this order (prefix match); the others behind a switch.
const MAIN_METRICS = ["reward", "rewards/", "eval/accuracy", "kl", "clip_ratio", "completions/mean_length",
  "entropy", "loss", "learning_rate"];
const SKIP_METRICS = new Set(["step", "global_step"]);
const COLORS = ["#1f5fbf", "#c2410c", "#177245", "#7c3aed"];

function isMain(key) {
  if (key.endsWith("/std") || key.endsWith("/failures") || key === "reward_std") return false;
  return MAIN_METRICS.some((m) => (m.endsWith("/") ? key.startsWith(m) : key === m || key.startsWith(m + "/")));
}

function metricOrder(key) {
  const i = MAIN_METRICS.findIndex((m) => (m.endsWith("/") ? key.startsWith(m) : key === m || key.startsWith(m + "/")));
  return i < 0 ? 100 : i;
}

// A line chart of `key` for every series; stage boundaries of the first series marked.
function drawChart(key, series) {
  const W = 400, H = 170, L = 44, R = 8, T = 8, B = 20;
  const pts = series.map((s) => s.lines.filter((l) => typeof l[key] === "number").map((l) => [l.global_step, l[key]]));
  const all = pts.flat();
  const box = el("div", { class: "chart", "data-metric": key },
    el("h3", {}, key),
    el("span", { class: "muted" }, all.length ? "" : "no values"));
  box.dataset.points = String(pts[0] ? pts[0].length : 0);
  if (!all.length) return box;
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": key + " over steps" });
  g.appendChild(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#bbb" }));
  g.appendChild(svg("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#bbb" }));
  for (const [y, anchor] of [[y1, T + 8], [y0, H - B]]) {
    const t = svg("text", { x: L - 4, y: anchor, "text-anchor": "end", "font-size": 10, fill: "#666" });
    t.textContent = fmtNum(y);
    g.appendChild(t);
  }
  for (const [x, a] of [[x0, "start"], [x1, "end"]]) {
    const t = svg("text", { x: sx(x), y: H - 6, "text-anchor": a, "font-size": 10, fill: "#666" });
    t.textContent = String(x);
    g.appendChild(t);
  }
  // Stage boundaries of the first series.
  const first = series[0] ? series[0].lines : [];
  for (let i = 1; i < first.length; i++) {
    if (first[i].stage !== first[i - 1].stage && typeof first[i].global_step === "number") {
      const x = sx(first[i].global_step);
      g.appendChild(svg("line", { x1: x, y1: T, x2: x, y2: H - B, stroke: "#999", "stroke-dasharray": "3 3", class: "stage-mark" }));
      const t = svg("text", { x: x + 2, y: T + 8, "font-size": 9, fill: "#777" });
      t.textContent = first[i].stage;
      g.appendChild(t);
    }
  }
  pts.forEach((p, k) => {
    if (!p.length) return;
    const color = COLORS[k % COLORS.length];
    if (p.length === 1) {
      g.appendChild(svg("circle", { cx: sx(p[0][0]), cy: sy(p[0][1]), r: 2.5, fill: color }));
    } else {
      g.appendChild(svg("polyline", {
        points: p.map(([x, y]) => sx(x).toFixed(1) + "," + sy(y).toFixed(1)).join(" "),
        fill: "none", stroke: color, "stroke-width": 1.6, "stroke-dasharray": k > 0 ? "5 3" : "none",
      }));
    }
  });
  const guide = svg("line", { x1: 0, y1: T, x2: 0, y2: H - B, stroke: "#333", visibility: "hidden" });
  g.appendChild(guide);
  const tip = el("div", { class: "tip", hidden: true });
  const show = (x) => {
    const lines = [];
    let gx = null;
    pts.forEach((p, k) => {
      if (!p.length) return;
      let best = p[0];
      for (const q of p) if (Math.abs(q[0] - x) < Math.abs(best[0] - x)) best = q;
      gx = gx === null ? best[0] : gx;
      lines.push(series[k].name + " @ " + best[0] + ": " + fmtNum(best[1]));
    });
    guide.setAttribute("x1", sx(gx)); guide.setAttribute("x2", sx(gx));
    guide.setAttribute("visibility", "visible");
    tip.textContent = lines.join("\n");
    tip.hidden = false;
  };
  g.addEventListener("mousemove", (e) => {
    const r = g.getBoundingClientRect();
    const x = x0 + (((e.clientX - r.left) / r.width) * W - L) / (W - L - R) * (x1 - x0);
    show(x);
  });
  g.addEventListener("mouseleave", () => { guide.setAttribute("visibility", "hidden"); tip.hidden = true; });
  g.setAttribute("tabindex", "0");
  g.addEventListener("focus", () => show(x1));
  g.addEventListener("blur", () => { guide.setAttribute("visibility", "hidden"); tip.hidden = true; });
  box.replaceChildren(box.firstChild, g, tip);
  return box;
}

async function viewRun(main, [id, otherId]) {
  const head = el("div", {});
  const tabs = el("div", { class: "tabs", role: "tablist" });
  const panel = el("div", { role: "tabpanel" });
  main.append(head, tabs, panel);
  const series = [{ id, name: id, lines: [] }];
  if (otherId) series.push({ id: otherId, name: otherId, lines: [] });
  let run = null;
  let showAll = false;
  let current = "curves";

  const renderHead = () => {
    head.replaceChildren(
      el("h1", {}, run ? run.name : id, " ", run ? statusCell(run) : null),
      el("div", { class: "row muted" },
        run ? [
          el("span", {}, "Stage: ", run.stage || "–"),
          el("span", {}, "Step: ", run.step === null || run.step === undefined ? "–" : run.step + (run.total_steps ? " / " + run.total_steps : "")),
          el("span", {}, "Elapsed: ", fmtSecs(run.elapsed_seconds)),
          el("span", {}, "ETA: ", fmtSecs(run.eta_seconds)),
          run.model ? el("span", {}, "Model: ", run.model) : null,
          run.error ? el("span", { class: "status-failed" }, "Error: ", run.error) : null,
        ] : null,
        run ? jobActions(run, refreshRun) : null));
  };
  const refreshRun = async () => {
    const runs = (await api("/v1/runs")).data;
    run = runs.find((r) => r.id === id) || null;
    for (const s of series) {
      const r = runs.find((x) => x.id === s.id);
      if (r) s.name = r.name;
    }
    renderHead();
    return runs;
  };

  let chartsBox = null;
  let redrawQueued = false;
  const redraw = () => {
    if (current !== "curves" || !chartsBox) return;
    if (redrawQueued) return;
    redrawQueued = true;
    requestAnimationFrame(() => {
      redrawQueued = false;
      const keys = new Set();
      for (const s of series) for (const l of s.lines) for (const [k, v] of Object.entries(l)) {
        if (typeof v === "number" && !SKIP_METRICS.has(k) && (showAll || isMain(k))) keys.add(k);
      }
      const sorted = [...keys].sort((a, b) => metricOrder(a) - metricOrder(b) || a.localeCompare(b));
      chartsBox.replaceChildren(...sorted.map((k) => drawChart(k, series)));
      if (!sorted.length) chartsBox.appendChild(el("p", { class: "muted" }, "No metrics yet."));
    });
  };

  const showCurves = async (runs) => {
    const others = runs.filter((r) => r.id !== id);
    const pick = el("select", { "aria-label": "Overlay another run" },
      el("option", { value: "" }, "— overlay another run —"),
      others.map((r) => el("option", { value: r.id, selected: r.id === otherId }, r.name)));
    pick.addEventListener("change", () => {
      location.hash = "#/run/" + encodeURIComponent(id) + (pick.value ? "/" + encodeURIComponent(pick.value) : "");
    });
    const all = el("input", { type: "checkbox", id: "all-metrics", checked: showAll });
    all.addEventListener("change", () => { showAll = all.checked; redraw(); });
    chartsBox = el("div", { class: "charts", id: "charts" });
    panel.replaceChildren(
      el("div", { class: "row" }, pick, el("label", {}, all, " every metric"),
        el("span", { class: "legend" }, series.map((s, k) => el("span", {},
          el("span", { class: "swatch", style: "background:" + COLORS[k] }), s.name)))),
      chartsBox);
    redraw();
  };

  const tabNames = [["curves", "Curves"], ["samples", "Samples"], ["sets", "Sets"]];
  const select = async (name) => {
    current = name;
    for (const b of tabs.children) b.setAttribute("aria-selected", String(b.dataset.tab === name));
    const runs = await refreshRun();
    if (name === "curves") await showCurves(runs);
    else if (name === "samples") await showSamples(panel, id);
    else await showSets(panel, run);
  };
  for (const [name, label] of tabNames) {
    tabs.appendChild(el("button", { type: "button", role: "tab", "data-tab": name, onclick: () => select(name).catch((e) => notice(e.message)) }, label));
  }

  // Follow each series' metrics.
  const controller = new AbortController();
  onCleanup(() => controller.abort());
  for (const s of series) {
    readEvents("/v1/runs/" + encodeURIComponent(s.id) + "/metrics", {}, (event, data) => {
      if (event === "end") { refreshRun().catch(() => {}); return; }
      try { s.lines.push(JSON.parse(data)); } catch (_) { return; }
      redraw();
    }, controller.signal).catch((e) => { if (e.name !== "AbortError") notice(e.message); });
  }
  await select("curves");
  every(2000, async () => { if (run && (run.status === "running" || run.status === "queued")) await refreshRun(); });
}

function sampleView(s) {
  const comps = Object.entries(s.rewards || {}).map(([k, v]) => k + " " + fmtNum(v)).join(" · ");
  return el("details", { class: "sample" },
    el("summary", {},
      el("span", {}, "reward ", fmtNum(s.reward), " · advantage ", fmtNum(s.advantage)),
      comps ? el("span", { class: "scores" }, " — ", comps) : null),
    completionView(s.completion));
}

async function showSamples(panel, id) {
  const all = (await api("/v1/runs/" + encodeURIComponent(id) + "/samples")).data;
  const stages = [...new Set(all.map((s) => s.stage))];
  const stage = el("select", { "aria-label": "Stage" }, el("option", { value: "" }, "every stage"), stages.map((s) => el("option", { value: s }, s)));
  const failures = el("input", { type: "checkbox", id: "only-failures" });
  const flat = el("input", { type: "checkbox", id: "only-flat" });
  const minReward = el("input", { type: "number", step: "any", "aria-label": "Minimum reward", placeholder: "min reward", size: 8 });
  const list = el("div", { class: "samples", id: "samples" });
  const render = () => {
    // Group by (step, group); a group's spread decides the zero-spread filter.
    const groups = new Map();
    for (const s of all) {
      if (stage.value && s.stage !== stage.value) continue;
      const key = s.stage + "/" + s.global_step + "/" + (s.group === undefined ? "" : s.group);
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(s);
    }
    const min = minReward.value === "" ? null : Number(minReward.value);
    const out = [];
    // Latest step first; a step's groups in order.
    const ordered = [...groups.values()].sort((a, b) =>
      (b[0].global_step - a[0].global_step) || ((a[0].group || 0) - (b[0].group || 0)));
    for (const members of ordered) {
      const rewards = members.map((m) => m.reward);
      const flatGroup = rewards.every((r) => r === rewards[0]);
      if (flat.checked && !flatGroup) continue;
      let shown = members;
      if (failures.checked) shown = shown.filter((m) => m.reward === null || m.reward <= 0);
      if (min !== null) shown = shown.filter((m) => m.reward !== null && m.reward >= min);
      if (!shown.length) continue;
      const m0 = members[0];
      out.push(el("section", { class: "group" },
        el("h2", {}, "Step " + m0.global_step + " (" + m0.stage + ")" + (m0.group === undefined ? "" : ", group " + m0.group),
          flatGroup ? el("span", { class: "muted" }, " — zero spread") : null),
        el("div", { class: "text" }, m0.prompt),
        shown.map(sampleView)));
      if (out.length >= 200) break;
    }
    list.replaceChildren(...(out.length ? out : [el("p", { class: "muted" }, all.length ? "No sample matches." : "No samples logged yet.")]));
  };
  for (const c of [stage, failures, flat, minReward]) c.addEventListener("input", render);
  panel.replaceChildren(
    el("div", { class: "row" }, stage,
      el("label", {}, failures, " failures only"),
      el("label", {}, flat, " zero-spread groups"),
      minReward),
    list);
  render();
}

async function showSets(panel, run) {
  if (!run || !run.sets.length) {
    panel.replaceChildren(el("p", { class: "muted" }, "This run wrote no sets (rejection sampling, distillation traces)."));
    return;
  }
  const pick = el("select", { "aria-label": "Set" }, run.sets.map((s) => el("option", { value: s }, s)));
  const list = el("div", { class: "samples" });
  const load = async () => {
    const rows = (await api("/v1/runs/" + encodeURIComponent(run.id) + "/sets/" + encodeURIComponent(pick.value))).data;
    list.replaceChildren(...rows.slice(0, 500).map((r) => {
      const prompt = r.prompt !== undefined ? r.prompt : r.messages ? JSON.stringify(r.messages) : null;
      const completion = r.completion !== undefined ? r.completion : r.response !== undefined ? r.response : null;
      return el("section", { class: "group" },
        prompt !== null ? el("div", { class: "text" }, typeof prompt === "string" ? prompt : JSON.stringify(prompt)) : null,
        completion !== null ? completionView(String(completion)) : el("div", { class: "text" }, JSON.stringify(r, null, 1)));
    }));
    if (!rows.length) list.appendChild(el("p", { class: "muted" }, "Empty set."));
  };
  pick.addEventListener("change", () => load().catch((e) => notice(e.message)));
  panel.replaceChildren(el("div", { class: "row" }, pick), list);
  await load();
}

// ---------- New job ----------

async function viewNew(main) {
  const text = el("textarea", { id: "recipe", "aria-label": "Recipe (TOML)", spellcheck: "false",
    placeholder: "name = \"my-run\"\n\n[model.init]\n…" });
  const file = el("input", { type: "file", accept: ".toml,text/plain", "aria-label": "Upload a recipe" });
  const name = el("input", { type: "text", id: "job-name", placeholder: "job name (optional)" });
  const result = el("div", { role: "status", id: "validation" });
  file.addEventListener("change", async () => {
    if (file.files.length) text.value = await file.files[0].text();
  });
  const validate = async () => {
    const v = await api("/v1/recipes/validate", { method: "POST", headers: { "Content-Type": "application/toml" }, body: text.value });
    result.replaceChildren(el("p", { class: "status-succeeded" }, "Valid: “" + v.name + "”, stages " + v.stages.join(" → ")));
    return v;
  };
  const start = async () => {
    await validate();
    const q = name.value ? "?name=" + encodeURIComponent(name.value) : "";
    const job = await api("/v1/jobs" + q, { method: "POST", headers: { "Content-Type": "application/toml" }, body: text.value });
    location.hash = "#/run/" + encodeURIComponent("job-" + job.id);
  };
  const guard = (f) => () => f().catch((e) => result.replaceChildren(el("p", { class: "status-failed" }, e.message)));
  main.append(
    el("h1", {}, "Start a training job"),
    el("p", { class: "muted" }, "Paste or upload a recipe (the TOML `r1host run` takes). It is checked before it starts."),
    el("div", { class: "row" }, file, name),
    text,
    el("div", { class: "row" },
      el("button", { type: "button", id: "validate", onclick: guard(validate) }, "Validate"),
      el("button", { type: "button", class: "primary", id: "start", onclick: guard(start) }, "Start job")),
    result);
}

// ---------- Chat ----------

const chatState = { messages: [] };

async function viewChat(main) {
  const models = (await api("/v1/models")).data;
  let rewards = [];
  try { rewards = (await api("/v1/rewards")).data; } catch (_) { /* older server */ }
  const model = el("select", { id: "chat-model", "aria-label": "Model" }, models.map((m) => el("option", { value: m.id }, m.id)));
  const num = (id, label, value, step) => el("label", {}, label, el("input", { id, type: "number", value, step }));
  const temperature = num("chat-temperature", "temperature", "0.7", "0.05");
  const topP = num("chat-top-p", "top_p", "0.95", "0.05");
  const maxTokens = num("chat-max-tokens", "max tokens", "256", "1");
  const bestOf = num("chat-best-of", "best of N", "1", "1");
  const reward = el("select", { id: "chat-reward", "aria-label": "Reward plugin" },
    el("option", { value: "" }, "rank by mean log-prob"), rewards.map((r) => el("option", { value: r.id }, r.id)));
  const log = el("div", { class: "chat-log", id: "chat-log", "aria-live": "polite" });
  const input = el("textarea", { id: "chat-input", "aria-label": "Message", placeholder: "Ask something… (Ctrl+Enter sends)" });
  const send = el("button", { type: "button", class: "primary", id: "chat-send" }, "Send");
  const clear = el("button", { type: "button" }, "New chat");
  const field = (label) => Number(label.querySelector("input").value);

  const bubble = (role) => {
    const body = el("div", {});
    const node = el("div", { class: "msg " + role }, el("div", { class: "role" }, role), body);
    log.appendChild(node);
    return body;
  };
  const renderHistory = () => {
    log.replaceChildren();
    for (const m of chatState.messages) {
      const body = bubble(m.role);
      if (m.reasoning) body.appendChild(reasoningBlock(m.reasoning, false));
      body.appendChild(el("div", { class: "text" }, m.content));
    }
  };
  renderHistory();

  const run = async () => {
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    send.disabled = true;
    chatState.messages.push({ role: "user", content: text });
    bubble("user").appendChild(el("div", { class: "text" }, text));
    const body = bubble("assistant");
    const request = {
      model: model.value,
      messages: chatState.messages.map((m) => ({ role: m.role, content: m.content })),
      temperature: field(temperature), top_p: field(topP), max_tokens: field(maxTokens),
    };
    const n = Math.max(1, field(bestOf) | 0);
    try {
      if (n > 1 || reward.value) {
        request.best_of = n;
        if (reward.value) request.reward = reward.value;
        const res = await api("/v1/chat/completions", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request) });
        const msg = res.choices[0].message;
        if (msg.reasoning_content) body.appendChild(reasoningBlock(msg.reasoning_content, false));
        body.appendChild(el("div", { class: "text answer-text" }, msg.content || ""));
        const ranked = res.r1 || { candidates: [] };
        const list = el("details", { class: "candidates", open: true },
          el("summary", {}, ranked.candidates.length + " candidates ranked by " + (ranked.ranked_by || "?")),
          ranked.candidates.map((c) => el("div", { class: "candidate" + (c.chosen ? " chosen" : "") },
            el("div", { class: "scores" }, "#" + c.index + " · score " + fmtNum(c.score) + (c.chosen ? " · chosen" : "")),
            completionView(c.text))));
        body.appendChild(list);
        chatState.messages.push({ role: "assistant", content: msg.content || "", reasoning: msg.reasoning_content });
      } else {
        request.stream = true;
        let reasoning = "", content = "";
        const thinkText = el("div", { class: "text" });
        const think = el("details", { class: "reasoning", open: true }, el("summary", {}, "Reasoning"), thinkText);
        const answer = el("div", { class: "text answer-text" });
        body.append(answer);
        await readEvents("/v1/chat/completions", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request) }, (event, data) => {
          if (data === "[DONE]") return;
          let chunk;
          try { chunk = JSON.parse(data); } catch (_) { return; }
          if (chunk.error) { notice(chunk.error.message); return; }
          const delta = (chunk.choices && chunk.choices[0] && chunk.choices[0].delta) || {};
          if (delta.reasoning_content) {
            if (!reasoning) body.insertBefore(think, answer);
            reasoning += delta.reasoning_content;
            thinkText.textContent = reasoning;
          }
          if (delta.content) { content += delta.content; answer.textContent = content; }
        });
        if (reasoning) think.open = false;
        chatState.messages.push({ role: "assistant", content, reasoning });
      }
    } catch (e) {
      body.appendChild(el("p", { class: "status-failed" }, e.message));
      chatState.messages.pop();
    } finally {
      send.disabled = false;
    }
  };
  send.addEventListener("click", () => run());
  input.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) run(); });
  clear.addEventListener("click", () => { chatState.messages = []; renderHistory(); });
  main.append(
    el("h1", {}, "Chat"),
    el("div", { class: "settings" }, el("label", {}, "model", model), temperature, topP, maxTokens, bestOf, el("label", {}, "reward", reward)),
    log,
    el("div", { class: "chat-input" }, input, el("div", { class: "row" }, send, clear)));
  if (!models.length) notice("No model is served yet: start r1host serve with --model, or wait for a job to finish.");
}

// ---------- Health ----------

function parsePrometheus(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{([^}]*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const p of (m[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[p[1]] = p[2];
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

async function viewHealth(main) {
  const cards = el("div", { class: "cards", id: "health-cards" });
  const perModel = el("div", { class: "table-wrap" });
  main.append(el("h1", {}, "Server health"), cards, el("h2", {}, "Per model"), perModel);
  let last = null;
  const card = (k, v) => el("div", { class: "card" }, el("div", { class: "v" }, v), el("div", { class: "k" }, k));
  await every(2000, async () => {
    const res = await fetch("/metrics", { headers: headers() });
    if (!res.ok) throw new ApiError(res.status === 401 ? "The server wants an API key (top right)." : "GET /metrics: " + res.status);
    const samples = parsePrometheus(await res.text());
    const sum = (name, filter) => samples.filter((s) => s.name === name && (!filter || filter(s.labels))).reduce((a, s) => a + s.value, 0);
    const now = performance.now() / 1000;
    const tokens = sum("r1_completion_tokens_total");
    const rate = last ? (tokens - last.tokens) / Math.max(1e-3, now - last.t) : null;
    last = { tokens, t: now };
    const ttftCount = sum("r1_time_to_first_token_seconds_count");
    const ttft = ttftCount ? sum("r1_time_to_first_token_seconds_sum") / ttftCount : null;
    const used = sum("r1_kv_cache_tokens_used"), total = sum("r1_kv_cache_tokens_total");
    cards.replaceChildren(
      card("tokens / s (completion)", rate === null ? "…" : rate.toFixed(1)),
      card("requests", fmtNum(sum("r1_http_requests_total"))),
      card("queue depth", fmtNum(sum("r1_queue_depth"))),
      card("batch size", fmtNum(sum("r1_batch_size"))),
      card("KV cache in use", total ? (100 * used / total).toFixed(1) + " %" : "–"),
      card("mean time to first token", ttft === null ? "–" : (ttft * 1000).toFixed(1) + " ms"),
      card("plugin failures", fmtNum(sum("r1_reward_plugin_failures_total"))),
      card("rejected (429)", fmtNum(sum("r1_http_rejections_total"))));
    const models = [...new Set(samples.filter((s) => s.labels.model && s.name === "r1_queue_depth").map((s) => s.labels.model))];
    const cell = (name, m) => fmtNum(sum(name, (l) => l.model === m));
    perModel.replaceChildren(el("table", {},
      el("thead", {}, el("tr", {}, ["model", "queue", "running", "batch", "KV used / total", "generated tokens"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, models.map((m) => el("tr", {}, el("td", {}, m), el("td", {}, cell("r1_queue_depth", m)),
        el("td", {}, cell("r1_running_sequences", m)), el("td", {}, cell("r1_batch_size", m)),
        el("td", {}, cell("r1_kv_cache_tokens_used", m) + " / " + cell("r1_kv_cache_tokens_total", m)),
        el("td", {}, cell("r1_engine_generated_tokens", m)))))));
  });
}

// ---------- Start ----------

document.getElementById("key-input").value = apiKey;
document.getElementById("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  apiKey = document.getElementById("key-input").value.trim();
  if (apiKey) sessionStorage.setItem(KEY_STORE, apiKey); else sessionStorage.removeItem(KEY_STORE);
  route();
});
window.addEventListener("hashchange", route);
route();
