// facenet-evc results browser: reads window.FACENET_BROWSE (data.js), renders the filtered rows.
// The view state lives in the URL hash (#a=..&b=..&outcome=..), so a filtered view can be linked
// and reloaded (and a headless browser can open it directly).
"use strict";
(function () {
  const D = window.FACENET_BROWSE;
  const $ = (id) => document.getElementById(id);
  if (!D) {
    document.body.insertAdjacentHTML("beforeend", "<p>data.js is missing or broken: rebuild the page.</p>");
    return;
  }
  const PAGE = 200;
  const FIELDS = ["a", "b", "outcome", "group", "change", "min", "max", "q", "sort"];
  const OUTCOME_ORDER = { wrong: 0, none: 1, mixed: 2, right: 3 };
  const GROUP_NAME = { emotional: "emotional-bias", neutral: "neutral", factual: "factual-bias" };
  let limit = PAGE;

  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const fmt = (x, d = 3) => (x == null || Number.isNaN(x) ? "–" : Number(x).toFixed(d));

  // ---- state <-> controls <-> hash
  function readHash() {
    const p = new URLSearchParams(location.hash.replace(/^#/, ""));
    const s = {};
    for (const f of FIELDS) s[f] = p.get(f) || "";
    if (!D.runs.includes(s.a)) s.a = D.runs[0];
    if (s.b && s.b !== "-" && !D.runs.includes(s.b)) s.b = "";
    if (!s.b) s.b = D.runs.length > 1 ? D.runs[1] : "-";
    if (!s.sort) s.sort = "id";
    return s;
  }
  function writeControls(s) { for (const f of FIELDS) $(f).value = s[f]; }
  function readControls() {
    const s = {};
    for (const f of FIELDS) s[f] = $(f).value.trim();
    return s;
  }
  function writeHash(s) {
    const p = new URLSearchParams();
    for (const f of FIELDS) if (s[f]) p.set(f, s[f]);
    history.replaceState(null, "", "#" + p.toString());
  }

  // ---- per-video facts of a run
  const res = (run, i) => {
    const r = D.results[run][i];
    return { caption: r[0], cider: r[1], outcome: r[2], words: r[3] };
  };
  function compare(i, a, b) {
    if (b === "-") return "";
    const ra = res(a, i), rb = res(b, i);
    if (ra.outcome === "right" && rb.outcome !== "right") return "fixed";
    if (ra.outcome !== "right" && rb.outcome === "right") return "broken";
    return "";
  }
  const searchText = {};
  function haystack(i, a, b) {
    const key = a + "\u0000" + b + "\u0000" + i;
    if (!(key in searchText)) {
      const v = D.videos[i];
      const parts = [v.id, res(a, i).caption, ...(v.refs || []), ...((v.retrieved || []).map((r) => r[0]))];
      if (b !== "-") parts.push(res(b, i).caption);
      searchText[key] = " " + parts.join(" \u0001 ").toLowerCase() + " ";
    }
    return searchText[key];
  }

  function matches(i, s) {
    const v = D.videos[i], ra = res(s.a, i);
    if (s.outcome === "notright" ? ra.outcome === "right" : s.outcome && ra.outcome !== s.outcome) return false;
    if (s.group && v.group !== s.group) return false;
    if (s.min !== "" && !(ra.cider >= Number(s.min))) return false;
    if (s.max !== "" && !(ra.cider <= Number(s.max))) return false;
    if (s.change && s.b !== "-") {
      const rb = res(s.b, i), c = compare(i, s.a, s.b);
      if (s.change === "fixed" && c !== "fixed") return false;
      if (s.change === "broken" && c !== "broken") return false;
      if (s.change === "outcome" && ra.outcome === rb.outcome) return false;
      if (s.change === "caption" && ra.caption === rb.caption) return false;
      if (s.change === "better" && !(ra.cider > rb.cider)) return false;
      if (s.change === "worse" && !(ra.cider < rb.cider)) return false;
    }
    if (s.q) {
      const h = haystack(i, s.a, s.b);
      for (const w of s.q.toLowerCase().split(/\s+/).filter(Boolean)) if (!h.includes(w)) return false;
    }
    return true;
  }

  function sorter(s) {
    const delta = (i) => (s.b === "-" ? 0 : res(s.a, i).cider - res(s.b, i).cider);
    const by = {
      id: (i, j) => (D.videos[i].id < D.videos[j].id ? -1 : 1),
      cider_asc: (i, j) => res(s.a, i).cider - res(s.a, j).cider,
      cider_desc: (i, j) => res(s.a, j).cider - res(s.a, i).cider,
      delta_asc: (i, j) => delta(i) - delta(j),
      delta_desc: (i, j) => delta(j) - delta(i),
      outcome: (i, j) => OUTCOME_ORDER[res(s.a, i).outcome] - OUTCOME_ORDER[res(s.a, j).outcome],
      group: (i, j) => (D.videos[i].group < D.videos[j].group ? -1 : D.videos[i].group > D.videos[j].group ? 1 : 0),
    }[s.sort] || ((i, j) => i - j);
    return (i, j) => by(i, j) || i - j;
  }

  // ---- rendering
  function captionHtml(r, q) {
    const marks = {};
    for (const [w, label, ok] of r.words) marks[w] = [label, ok];
    const terms = q ? q.toLowerCase().split(/\s+/).filter(Boolean) : [];
    return r.caption.split(" ").map((tok) => {
      let h = esc(tok);
      if (marks[tok]) h = `<span class="emo ${marks[tok][1] ? "ok" : "bad"}" title="${esc(marks[tok][0])}${marks[tok][1] ? " (right)" : " (wrong)"}">${h}</span>`;
      if (terms.some((t) => tok.toLowerCase().includes(t))) h = `<span class="hit">${h}</span>`;
      return h;
    }).join(" ");
  }
  function captionLine(tag, run, r, q, differs) {
    return `<div class="cap${differs ? " diff" : ""}" data-run="${esc(run)}"><b>${tag}</b> ${captionHtml(r, q)} ` +
      `<span class="badge ${r.outcome}" data-outcome="${r.outcome}">${r.outcome === "none" ? "no emotion word" : r.outcome}</span>` +
      ` <span class="muted">${esc(run)}</span></div>`;
  }
  function retrievedHtml(v) {
    if (!v.retrieved || !v.retrieved.length) {
      return v.omitted && v.omitted.length ? `<span class="muted">${esc(v.omitted.join("; "))}</span>` :
        '<span class="muted">no model weights (page built without a checkpoint)</span>';
    }
    const rows = v.retrieved.map((r, k) => {
      const al = v.alpha ? v.alpha[k].map((x) => fmt(x, 2)).join("/") : "–";
      const th = v.theta ? v.theta[k] : null, g = v.g ? v.g[k] : null;
      const bar = g == null ? "" : `<span class="bar" style="width:${Math.round(40 * g)}px"></span>`;
      return `<tr><td>${k + 1}</td><td>${esc(r[0])}</td><td>${esc(r[1])} / ${esc(r[2])} / ${esc(r[3])}</td>` +
        `<td class="num">${fmt(r[4], 2)}</td><td class="num">${al}</td><td class="num">${fmt(th, 2)}</td>` +
        `<td class="num">${bar}${fmt(g, 2)}</td></tr>`;
    }).join("");
    const gates = v.gates ? `<div class="muted">gate means: ${Object.entries(v.gates).map(([k, x]) =>
      `${k === "b_f" ? "B_f" : "B_e"} ${fmt(x, 3)}`).join(", ")}</div>` : "";
    return `<table class="ret"><tr><th>#</th><th>caption</th><th>S / P / O</th><th>sim</th><th>&alpha; S/P/O</th>` +
      `<th>&theta;</th><th>g</th></tr>${rows}</table>${gates}`;
  }
  function rowHtml(i, s) {
    const v = D.videos[i], ra = res(s.a, i), rb = s.b === "-" ? null : res(s.b, i);
    const c = rb ? compare(i, s.a, s.b) : "";
    const delta = rb ? ra.cider - rb.cider : null;
    const video = `<div class="vid">${esc(v.id)}</div>` +
      (v.thumb ? `<img class="thumb" loading="lazy" src="${esc(v.thumb)}" alt="frames of ${esc(v.id)}">` : "") +
      `<span class="badge ${v.group}" data-group="${v.group}">${GROUP_NAME[v.group] || esc(v.group)}</span>` +
      (v.figure ? ` <a href="${esc(v.figure)}">explain figure</a>` : "") +
      (c ? `<div class="${c}"><b>${c === "fixed" ? "A fixes the emotion" : "A breaks the emotion"}</b></div>` : "");
    const caps = captionLine("A", s.a, ra, s.q, rb && ra.caption !== rb.caption) +
      (rb ? captionLine("B", s.b, rb, s.q, ra.caption !== rb.caption) : "") +
      `<details><summary>${v.refs.length} references; their emotions: ${esc(v.ref_cats.join(", ") || "none")}</summary>` +
      `<ol class="refs">${v.refs.map((r) => `<li>${esc(r)}</li>`).join("")}</ol></details>`;
    const cider = `<div class="num">A ${fmt(ra.cider)}</div>` + (rb ? `<div class="num">B ${fmt(rb.cider)}</div>` +
      `<div class="num ${delta > 0 ? "pos" : delta < 0 ? "neg" : ""}">&Delta; ${delta > 0 ? "+" : ""}${fmt(delta)}</div>` : "");
    return `<tr class="row ${c}" data-vid="${esc(v.id)}" data-outcome="${ra.outcome}" data-group="${v.group}">` +
      `<td>${video}</td><td>${caps}</td><td>${retrievedHtml(v)}</td><td>${cider}</td></tr>`;
  }

  function summaryHtml(s, shown) {
    const n = D.videos.length;
    let html = `<span id="count" data-shown="${shown.length}" data-total="${n}">Showing ${shown.length} of ${n} videos</span>` +
      (shown.length > limit ? ` (first ${limit} drawn)` : "") + ".";
    const tally = (run, idx) => {
      const t = { right: 0, mixed: 0, wrong: 0, none: 0 };
      for (const i of idx) t[res(run, i).outcome]++;
      return t;
    };
    const all = D.videos.map((_, i) => i);
    const ta = tally(s.a, all);
    html += `<br>A = <b>${esc(s.a)}</b>: emotion right ${ta.right}, mixed ${ta.mixed}, wrong ${ta.wrong}, none ${ta.none}; ` +
      `mean CIDEr ${fmt(all.reduce((x, i) => x + res(s.a, i).cider, 0) / Math.max(1, n))}.`;
    if (s.b !== "-") {
      let fixed = 0, broken = 0, better = 0, worse = 0, differ = 0;
      for (const i of all) {
        const c = compare(i, s.a, s.b);
        fixed += c === "fixed"; broken += c === "broken";
        const d = res(s.a, i).cider - res(s.b, i).cider;
        better += d > 0; worse += d < 0;
        differ += res(s.a, i).caption !== res(s.b, i).caption;
      }
      const tb = tally(s.b, all);
      html += `<br>B = <b>${esc(s.b)}</b>: emotion right ${tb.right}, mixed ${tb.mixed}, wrong ${tb.wrong}, none ${tb.none}.` +
        `<br><span id="compare" data-fixed="${fixed}" data-broken="${broken}"><b>${esc(s.a)}</b> fixes the emotion of ` +
        `<span class="fixed">${fixed}</span> video${fixed === 1 ? "" : "s"} and breaks <span class="broken">${broken}</span>` +
        ` (vs ${esc(s.b)})</span>; CIDEr higher on ${better}, lower on ${worse}; captions differ on ${differ} of ${n}.`;
    }
    return html;
  }

  function render() {
    const s = readControls();
    if (!s.a) s.a = D.runs[0];
    writeHash(s);
    const shown = D.videos.map((_, i) => i).filter((i) => matches(i, s)).sort(sorter(s));
    $("summary").innerHTML = summaryHtml(s, shown);
    $("rows").innerHTML = shown.slice(0, limit).map((i) => rowHtml(i, s)).join("");
    $("more").hidden = shown.length <= limit;
  }

  // ---- start
  document.title = D.title ? `${D.title}: results browser` : document.title;
  if (D.title) $("title").textContent = `${D.title}: results browser`;
  for (const id of ["a", "b"]) {
    const opts = (id === "b" ? ['<option value="-">(none)</option>'] : [])
      .concat(D.runs.map((r) => `<option value="${esc(r)}">${esc(r)}</option>`));
    $(id).innerHTML = opts.join("");
  }
  writeControls(readHash());
  for (const f of FIELDS) {
    $(f).addEventListener(["q", "min", "max"].includes(f) ? "input" : "change", () => { limit = PAGE; render(); });
  }
  $("more").addEventListener("click", () => { limit += PAGE; render(); });
  $("reset").addEventListener("click", () => { location.hash = ""; writeControls(readHash()); limit = PAGE; render(); });
  window.addEventListener("hashchange", () => { writeControls(readHash()); render(); });
  render();
})();
