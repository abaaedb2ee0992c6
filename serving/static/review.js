// The review page: versions, champion and challenger side by side, example queries with players, admin.
"use strict";

(() => {
  const { api, audioUrl, label, el, status, setApiKey, apiKey } = musicrec;
  const $ = (id) => document.getElementById(id);
  const fmt = (v) => (typeof v === "number" ? v.toFixed(3) : String(v));

  function badge(text, kind = "") {
    return el("span", { class: `badge ${kind}` }, text);
  }

  function versionRow(v) {
    const promote = el("button", { type: "button", class: "small", "aria-label": `Promote version ${v.version}` }, "Promote");
    promote.addEventListener("click", () => admin(`/admin/models/${encodeURIComponent(v.version)}/promote`));
    if (v.aliases.includes("champion")) promote.disabled = true;
    return el("tr", { "data-version": v.version },
      el("td", {}, v.version),
      el("td", {}, ...v.aliases.map((a) => badge(a))),
      el("td", {}, badge(v.decision, v.decision)),
      el("td", {}, v.reasons.join("; ")),
      el("td", {}, v.created.replace("T", " ").slice(0, 19)),
      el("td", {}, promote));
  }

  // Metrics: value ± sd where the run logged an interval (``<name>_sd``).
  function metricsTable(metrics) {
    const names = Object.keys(metrics).filter((k) => !k.endsWith("_sd")).sort();
    const body = names.map((n) => el("tr", {},
      el("th", { scope: "row" }, n),
      el("td", { class: "num" }, fmt(metrics[n]) + (metrics[`${n}_sd`] !== undefined ? ` ± ${fmt(metrics[`${n}_sd`])}` : ""))));
    return el("div", { class: "scroll" }, el("table", {},
      el("caption", { class: "visually-hidden" }, "Metrics"),
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "metric"), el("th", { scope: "col", class: "num" }, "value ± sd"))),
      el("tbody", {}, ...body)));
  }

  function rowsTable(rows, caption) {
    if (!rows.length) return el("p", { class: "meta" }, `No ${caption}.`);
    const cols = Object.keys(rows[0]);
    return el("div", { class: "scroll" }, el("table", {},
      el("caption", {}, caption),
      el("thead", {}, el("tr", {}, ...cols.map((c) => el("th", { scope: "col" }, c)))),
      el("tbody", {}, ...rows.map((r) => el("tr", {}, ...cols.map((c) => el("td", {}, r[c])))))));
  }

  function sidePanel(name, side) {
    if (!side) return el("div", { class: "side" }, el("h3", {}, name), el("p", { class: "meta" }, `No ${name}.`));
    const v = side.version;
    const images = side.artifacts.filter((a) => a.endsWith(".png")).map((a) => el("figure", {},
      el("img", { class: "artifact", src: `/models/${v.version}/artifacts/${encodeURIComponent(a)}`, alt: `${a} of version ${v.version}`, loading: "lazy" }),
      el("figcaption", { class: "meta" }, a)));
    return el("div", { class: "side", "data-side": name, "data-version": v.version },
      el("h3", {}, `${name}: version ${v.version}`),
      el("p", {}, badge(v.decision, v.decision), v.reasons.join("; ")),
      el("p", { class: "meta" }, side.collection ? `answers from collection ${side.collection}` : "no collection filled by this version yet"),
      metricsTable(side.metrics),
      rowsTable(side.per_style, "Per style"),
      ...images);
  }

  function player(track, text) {
    return el("li", { "data-track-id": track.track_id },
      el("span", {}, text),
      el("audio", { controls: "", preload: "none", src: audioUrl(track.track_id), "aria-label": `Play ${label(track)}` }));
  }

  function showExamples(data) {
    const blocks = data.examples.map((ex) => {
      const cols = data.versions.map((v) => el("div", { "data-version": v },
        el("h4", {}, `version ${v}`),
        el("ol", { class: "tracks" }, ...(ex.answers[v] || []).map((r) => player(r, `${label(r)} · ${r.style} · ${fmt(r.distance)}`)))));
      return el("article", { class: "example" },
        el("h3", {}, `${label(ex.query)} (${ex.query.style})`),
        el("ul", { class: "tracks" }, player(ex.query, "query")),
        el("div", { class: "sides" }, ...cols));
    });
    $("examples").replaceChildren(...blocks);
  }

  async function admin(path) {
    setApiKey($("api-key").value);
    status($("admin-status"), "Working…");
    try {
      const done = await api(path, { method: "POST" });
      status($("admin-status"), `Champion is now version ${done.champion} (was ${done.previous || "none"}); ${done.note}`);
      await load();
    } catch (err) {
      status($("admin-status"), String(err.message), true);
    }
  }

  async function load() {
    try {
      const review = await api("/models/review");
      $("versions").tBodies[0].replaceChildren(...review.versions.map(versionRow));
      $("sides").replaceChildren(sidePanel("champion", review.champion), sidePanel("challenger", review.challenger));
      const versions = [review.champion, review.challenger].filter(Boolean).map((s) => s.version.version);
      status($("review-status"), `${review.versions.length} versions registered`);
      if (versions.length) {
        const params = new URLSearchParams({ n: "3", k: "5" });
        versions.forEach((v) => params.append("version", v));
        showExamples(await api(`/models/examples?${params}`));
      }
    } catch (err) {
      status($("review-status"), String(err.message), true);
    }
  }

  $("api-key").value = apiKey();
  $("rollback").addEventListener("click", () => admin("/admin/models/rollback"));
  load().then(() => { document.body.dataset.ready = "true"; });
})();
