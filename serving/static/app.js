// The listening page: search, play, neighbours, upload, playlist (M3U), path, map.
"use strict";

(() => {
  const { api, audioUrl, label, el, trackItem, status } = musicrec;
  const $ = (id) => document.getElementById(id);
  const seeds = new Map();
  let pathFrom = null;
  let pathTo = null;

  const fmt = (d) => Number(d).toFixed(3);

  function buttonsFor() {
    return [
      { text: "Play", onclick: play },
      { text: "Neighbours", onclick: neighbours },
      { text: "Seed", onclick: addSeed },
      { text: "From", onclick: (t) => { pathFrom = t; showPathEnds(); } },
      { text: "To", onclick: (t) => { pathTo = t; showPathEnds(); } },
    ];
  }

  function play(track) {
    const player = $("player");
    player.src = audioUrl(track.track_id);
    player.dataset.trackId = track.track_id;
    $("now-playing").textContent = `${label(track)} (${track.style || "?"}${track.source ? ", " + track.source : ""})`;
    player.play().catch(() => { /* autoplay may be refused; the controls still work */ });
  }

  function fill(list, tracks, details) {
    list.replaceChildren(...tracks.map((t) => trackItem(t, details(t), buttonsFor())));
  }

  async function search(event) {
    if (event) event.preventDefault();
    const params = new URLSearchParams({ q: $("q").value, limit: "25" });
    if ($("style").value) params.set("style", $("style").value);
    status($("search-status"), "Searching…");
    try {
      const found = await api(`/library/search?${params}`);
      fill($("results"), found.tracks, (t) => `${t.style} · ${t.source}${t.album && t.album !== t.source ? " · " + t.album : ""}`);
      const shown = found.tracks.length;
      status($("search-status"), found.total > shown ? `${found.total} tracks match; the first ${shown} are shown.` : `${found.total} tracks match.`);
    } catch (err) {
      status($("search-status"), String(err.message), true);
    }
  }

  function showNeighbours(answer, what) {
    fill($("neighbours"), answer.results, (r) => `distance ${fmt(r.distance)} · ${r.style} · ${r.source}`);
    status($("neighbours-status"), `${answer.results.length} nearest to ${what} (model ${answer.model_version})`);
  }

  async function neighbours(track) {
    status($("neighbours-status"), "Looking…");
    try {
      showNeighbours(await api(`/tracks/${encodeURIComponent(track.track_id)}/similar?k=10`), label(track));
    } catch (err) {
      status($("neighbours-status"), String(err.message), true);
    }
  }

  async function upload(event) {
    event.preventDefault();
    const file = $("clip").files[0];
    if (!file) { status($("neighbours-status"), "Choose an audio file first.", true); return; }
    const form = new FormData();
    form.append("file", file);
    status($("neighbours-status"), `Listening to ${file.name}…`);
    try {
      showNeighbours(await api("/similar?k=10", { method: "POST", body: form }), `the clip ${file.name}`);
    } catch (err) {
      status($("neighbours-status"), String(err.message), true);
    }
  }

  function addSeed(track) {
    seeds.set(track.track_id, track);
    showSeeds();
  }

  function showSeeds() {
    const items = [...seeds.values()].map((t) => trackItem(t, t.style, [
      { text: "Play", onclick: play },
      { text: "Remove", onclick: (x) => { seeds.delete(x.track_id); showSeeds(); } },
    ]));
    $("seeds").replaceChildren(...items);
    const link = $("m3u");
    if (seeds.size) {
      const params = new URLSearchParams({ length: $("playlist-length").value || "20" });
      for (const id of seeds.keys()) params.append("seed", id);
      link.href = `/playlist.m3u?${params}`;
      link.removeAttribute("aria-disabled");
    } else {
      link.href = "#";
      link.setAttribute("aria-disabled", "true");
    }
  }

  function showPathEnds() {
    $("path-from").textContent = pathFrom ? label(pathFrom) : "—";
    $("path-to").textContent = pathTo ? label(pathTo) : "—";
    $("path-go").disabled = !(pathFrom && pathTo && pathFrom.track_id !== pathTo.track_id);
  }

  async function findPath() {
    const params = new URLSearchParams({ start: pathFrom.track_id, end: pathTo.track_id, steps: $("path-steps").value || "6" });
    status($("path-status"), "Walking…");
    try {
      const found = await api(`/path?${params}`);
      fill($("path"), found.steps, (s) => `step ${fmt(s.distance)} · to end ${fmt(s.to_end)} · ${s.style}`);
      status($("path-status"), `${found.steps.length} tracks${found.reached ? "" : " (the last step is a jump: no nearer way was found)"}`);
    } catch (err) {
      status($("path-status"), String(err.message), true);
    }
  }

  // ---- the map: a canvas of at most 2000 points per view, fetched for the box shown ----
  const colours = ["#0b5fae", "#d1495b", "#2a9d3f", "#e69f00", "#7b3fa0", "#00a0b0", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"];
  const mapState = { full: null, box: null, points: [], styles: [] };

  function colourOf(style) {
    const i = mapState.styles.indexOf(style);
    return colours[(i < 0 ? 0 : i) % colours.length];
  }

  async function loadMap(box) {
    const params = new URLSearchParams({ limit: "2000" });
    if (box) ["x0", "y0", "x1", "y1"].forEach((k, i) => params.set(k, String(box[i])));
    try {
      const m = await api(`/map?${params}`);
      mapState.full = m.bounds;
      mapState.box = box || m.bounds;
      mapState.points = m.points;
      mapState.styles = m.styles;
      drawMap();
      $("legend").replaceChildren(...m.styles.map((s) => el("span", {}, el("span", { class: "swatch", style: `background:${colourOf(s)}` }), s)));
      status($("map-status"), `${m.points.length} of ${m.total} tracks in view (model ${m.model_version})`);
    } catch (err) {
      status($("map-status"), String(err.message), true);
    }
  }

  function toCanvas(x, y) {
    const c = $("map");
    const [x0, y0, x1, y1] = mapState.box;
    const pad = 12;
    const w = c.width - 2 * pad;
    const h = c.height - 2 * pad;
    return [pad + ((x - x0) / ((x1 - x0) || 1)) * w, pad + (1 - (y - y0) / ((y1 - y0) || 1)) * h];
  }

  function drawMap() {
    const c = $("map");
    const ctx = c.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, c.width, c.height);
    for (const [, x, y, style] of mapState.points) {
      const [px, py] = toCanvas(x, y);
      ctx.fillStyle = colourOf(style);
      ctx.beginPath();
      ctx.arc(px, py, 4, 0, 2 * Math.PI);
      ctx.fill();
    }
  }

  function mapClick(event) {
    const c = $("map");
    const rect = c.getBoundingClientRect();
    const cx = ((event.clientX - rect.left) / rect.width) * c.width;
    const cy = ((event.clientY - rect.top) / rect.height) * c.height;
    let best = null;
    let bestD = Infinity;
    for (const p of mapState.points) {
      const [px, py] = toCanvas(p[1], p[2]);
      const d = (px - cx) ** 2 + (py - cy) ** 2;
      if (d < bestD) { bestD = d; best = p; }
    }
    if (best && bestD < 15 * 15) {
      const track = { track_id: best[0], title: best[4], style: best[3] };
      play(track);
      neighbours(track);
    }
  }

  function zoom(factor, dx = 0, dy = 0) {
    if (!mapState.box) return;
    const [x0, y0, x1, y1] = mapState.box;
    const cx = (x0 + x1) / 2 + dx * (x1 - x0);
    const cy = (y0 + y1) / 2 + dy * (y1 - y0);
    const hw = ((x1 - x0) / 2) * factor;
    const hh = ((y1 - y0) / 2) * factor;
    loadMap([cx - hw, cy - hh, cx + hw, cy + hh]);
  }

  function mapKeys(event) {
    const moves = { ArrowLeft: [-0.2, 0], ArrowRight: [0.2, 0], ArrowUp: [0, 0.2], ArrowDown: [0, -0.2] };
    if (moves[event.key]) { zoom(1, ...moves[event.key]); event.preventDefault(); }
    else if (event.key === "+" || event.key === "=") zoom(0.5);
    else if (event.key === "-") zoom(2);
  }

  async function start() {
    $("search-form").addEventListener("submit", search);
    $("upload-form").addEventListener("submit", upload);
    $("clear-seeds").addEventListener("click", () => { seeds.clear(); showSeeds(); });
    $("playlist-length").addEventListener("change", showSeeds);
    $("m3u").addEventListener("click", (e) => { if (!seeds.size) e.preventDefault(); });
    $("path-go").addEventListener("click", findPath);
    $("map").addEventListener("click", mapClick);
    $("map").addEventListener("keydown", mapKeys);
    $("zoom-in").addEventListener("click", () => zoom(0.5));
    $("zoom-out").addEventListener("click", () => zoom(2));
    $("zoom-reset").addEventListener("click", () => loadMap(null));
    try {
      const health = await api("/health");
      $("served").textContent = `${health.tracks} tracks · model ${health.model_version}`;
      for (const s of health.styles) $("style").append(el("option", { value: s }, s));
    } catch (err) {
      $("served").textContent = String(err.message);
    }
    await Promise.all([search(), loadMap(null)]);
    document.body.dataset.ready = "true";
  }

  start();
})();
