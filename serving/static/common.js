// Shared by the pages: calls to the API (with the API key when one is entered) and track rows.
"use strict";

const musicrec = (() => {
  const keyName = "musicrec.apiKey";

  function apiKey() {
    return sessionStorage.getItem(keyName) || "";
  }

  function setApiKey(value) {
    if (value) sessionStorage.setItem(keyName, value);
    else sessionStorage.removeItem(keyName);
  }

  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (apiKey()) headers.set("X-API-Key", apiKey());
    const response = await fetch(path, { ...options, headers });
    const type = response.headers.get("content-type") || "";
    const body = type.includes("json") ? await response.json() : await response.text();
    if (!response.ok) {
      const detail = body && body.detail ? body.detail : response.statusText;
      const error = new Error(`${response.status}: ${detail}`);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  function audioUrl(trackId) {
    return `/tracks/${encodeURIComponent(trackId)}/audio`;
  }

  function label(track) {
    const title = track.title || track.track_id;
    return track.artist ? `${title} — ${track.artist}` : title;
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (name === "onclick") node.addEventListener("click", value);
      else if (value !== null && value !== undefined) node.setAttribute(name, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  // One <li>: the track's name and details, then buttons (each {text, title, onclick}).
  function trackItem(track, details, buttons) {
    const actions = el("span", { class: "actions" });
    for (const b of buttons) {
      actions.append(el("button", {
        type: "button", class: "small", "aria-label": `${b.text}: ${label(track)}`, onclick: () => b.onclick(track),
      }, b.text));
    }
    const item = el("li", { "data-track-id": track.track_id }, el("span", { class: "name" }, label(track)), " ");
    if (details) item.append(el("span", { class: "meta" }, details));
    item.append(actions);
    return item;
  }

  function status(node, text, isError = false) {
    node.textContent = text;
    node.classList.toggle("error", isError);
  }

  return { api, apiKey, setApiKey, audioUrl, label, el, trackItem, status };
})();
