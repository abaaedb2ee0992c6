//! musicrec as a Navidrome plugin: SonicSimilarity (`nd_get_sonic_similar_tracks`, `nd_find_sonic_path`)
//! and the MetadataAgent's `nd_get_similar_songs_by_track` (Instant Mix), each one HTTP POST to a
//! musicrec server's `/navidrome/*` routes.
//!
//! No PDK crate: the Extism guest ABI is declared here by hand (the `extism:host/env` imports), so the
//! plugin builds with Debian's rustc and packaged crates alone. Extism memory lives in the host's
//! kernel, not in this module's linear memory: bytes go in and out through `alloc`/`store_*`/`load_*`.

use serde_json::{json, Map, Value};

mod host {
    #[link(wasm_import_module = "extism:host/env")]
    extern "C" {
        pub fn input_length() -> u64;
        pub fn input_load_u8(offset: u64) -> u8;
        pub fn input_load_u64(offset: u64) -> u64;
        pub fn length(offset: u64) -> u64;
        pub fn alloc(length: u64) -> u64;
        pub fn free(offset: u64);
        pub fn load_u8(offset: u64) -> u8;
        pub fn load_u64(offset: u64) -> u64;
        pub fn store_u8(offset: u64, value: u8);
        pub fn store_u64(offset: u64, value: u64);
        pub fn output_set(offset: u64, length: u64);
        pub fn error_set(offset: u64);
        pub fn config_get(offset: u64) -> u64;
        pub fn http_request(request: u64, body: u64) -> u64;
        pub fn http_status_code() -> i32;
        pub fn log_info(offset: u64);
        pub fn log_warn(offset: u64);
    }
}

// ---- the guest side of the Extism ABI ----------------------------------------------------------------

fn input() -> Vec<u8> {
    unsafe {
        let n = host::input_length();
        let mut out = Vec::with_capacity(n as usize);
        let mut i = 0;
        while i + 8 <= n {
            out.extend_from_slice(&host::input_load_u64(i).to_le_bytes());
            i += 8;
        }
        while i < n {
            out.push(host::input_load_u8(i));
            i += 1;
        }
        out
    }
}

/// Copy `bytes` into a new block of Extism memory; 0 for no bytes.
fn to_host(bytes: &[u8]) -> u64 {
    if bytes.is_empty() {
        return 0;
    }
    unsafe {
        let offset = host::alloc(bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        let mut at = offset;
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            host::store_u64(at, u64::from_le_bytes(word));
            at += 8;
        }
        for b in chunks.remainder() {
            host::store_u8(at, *b);
            at += 1;
        }
        offset
    }
}

/// The bytes of the Extism memory block at `offset`, which is then freed.
fn from_host(offset: u64) -> Vec<u8> {
    if offset == 0 {
        return Vec::new();
    }
    unsafe {
        let n = host::length(offset);
        let mut out = Vec::with_capacity(n as usize);
        let mut i = 0;
        while i + 8 <= n {
            out.extend_from_slice(&host::load_u64(offset + i).to_le_bytes());
            i += 8;
        }
        while i < n {
            out.push(host::load_u8(offset + i));
            i += 1;
        }
        host::free(offset);
        out
    }
}

fn set_output(bytes: &[u8]) {
    let offset = to_host(bytes);
    unsafe { host::output_set(offset, bytes.len() as u64) }
}

/// Report `message` as the call's error (the host owns the block from here) and return the failure code.
fn fail(message: &str) -> i32 {
    let text = format!("musicrec plugin: {message}");
    log(false, &text);
    unsafe { host::error_set(to_host(text.as_bytes())) }
    1
}

fn log(info: bool, message: &str) {
    let offset = to_host(message.as_bytes());
    unsafe {
        if info {
            host::log_info(offset)
        } else {
            host::log_warn(offset)
        }
    }
}

fn config(key: &str) -> Option<String> {
    let offset = unsafe { host::config_get(to_host(key.as_bytes())) };
    if offset == 0 {
        return None;
    }
    let value = String::from_utf8_lossy(&from_host(offset)).trim().to_string();
    if value.is_empty() {
        None
    } else {
        Some(value)
    }
}

// ---- talking to musicrec -------------------------------------------------------------------------------

struct Settings {
    base: String,
    api_key: Option<String>,
}

fn settings() -> Result<Settings, String> {
    let base = config("musicrec_url").ok_or_else(|| {
        "bad config: musicrec_url is not set (the musicrec server's base URL, e.g. http://localhost:8000)".to_string()
    })?;
    if !(base.starts_with("http://") || base.starts_with("https://")) || base.len() < 10 {
        return Err(format!("bad config: musicrec_url {base:?} is not an http:// or https:// URL"));
    }
    Ok(Settings { base: base.trim_end_matches('/').to_string(), api_key: config("api_key") })
}

/// POST `body` to `route` on musicrec; the parsed JSON answer, or an error that says what went wrong.
///
/// A refused connection, a host outside `requiredHosts` or the host's call timeout fail inside the host's
/// `http_request`, which ends the call with the host's own message (no guest code runs after it).
fn post(route: &str, body: &Value) -> Result<Value, (i32, String)> {
    let cfg = settings().map_err(|e| (0, e))?;
    let url = format!("{}{route}", cfg.base);
    let mut headers = Map::new();
    headers.insert("Content-Type".into(), Value::from("application/json"));
    headers.insert("Accept".into(), Value::from("application/json"));
    if let Some(key) = &cfg.api_key {
        headers.insert("X-API-Key".into(), Value::from(key.as_str()));
    }
    let request = json!({"url": url, "method": "POST", "headers": headers});
    let req = to_host(request.to_string().as_bytes());
    let payload = to_host(body.to_string().as_bytes());
    // A failing http_request never returns here: the error set now is the one the host reports (the
    // Extism runtime puts the guest's error first), cleared again once musicrec has answered.
    let pending = format!(
        "musicrec plugin: no answer from musicrec at {url}: it is down, its host is not in the plugin's \
         requiredHosts, or it took longer than the host's call time limit"
    );
    let pending = to_host(pending.as_bytes());
    unsafe { host::error_set(pending) };
    let answer = from_host(unsafe { host::http_request(req, payload) });
    let status = unsafe { host::http_status_code() };
    unsafe {
        host::error_set(0);
        host::free(pending);
    }
    let parsed: Option<Value> = serde_json::from_slice(&answer).ok();
    if status == 200 {
        return parsed.ok_or_else(|| (status, format!("musicrec at {url} answered with something that is not JSON")));
    }
    let detail = parsed
        .as_ref()
        .and_then(|v| v.get("detail"))
        .and_then(|d| d.as_str().map(str::to_string).or_else(|| Some(d.to_string())))
        .unwrap_or_else(|| String::from_utf8_lossy(&answer).chars().take(300).collect());
    let why = match status {
        401 | 403 => format!("musicrec refused the API key (HTTP {status}): {detail}; check the api_key setting"),
        404 => format!("unknown song: {detail}"),
        409 => format!("ambiguous song: {detail}"),
        422 => format!("musicrec rejected the request (HTTP 422): {detail}"),
        503 => format!("musicrec is up but its index is not ready (HTTP 503): {detail}"),
        0 => format!("no answer from musicrec at {url}"),
        _ => format!("musicrec at {url} failed (HTTP {status}): {detail}"),
    };
    Err((status, why))
}

fn read_input() -> Result<Value, String> {
    serde_json::from_slice(&input()).map_err(|e| format!("the input is not JSON: {e}"))
}

fn answer(result: Result<Value, String>) -> i32 {
    match result {
        Ok(value) => {
            set_output(value.to_string().as_bytes());
            0
        }
        Err(message) => fail(&message),
    }
}

/// Navidrome's request forwarded as is: musicrec's routes take and give the capability's JSON.
fn forward(route: &str) -> i32 {
    answer(read_input().and_then(|body| post(route, &body).map_err(|(_, e)| e)))
}

// ---- the exports ------------------------------------------------------------------------------------

/// SonicSimilarity: `{song, count}` -> `{matches: [{song, similarity}]}`.
#[no_mangle]
pub extern "C" fn nd_get_sonic_similar_tracks() -> i32 {
    forward("/navidrome/similar")
}

/// SonicSimilarity: `{startSong, endSong, count}` -> `{matches: [{song, similarity}]}`.
#[no_mangle]
pub extern "C" fn nd_find_sonic_path() -> i32 {
    forward("/navidrome/path")
}

/// MetadataAgent (Instant Mix): `{id, name, artist, mbid?, count}` -> `{songs: [SongRef]}`.
///
/// A song musicrec does not know is "no data" (an empty list, no error), as Navidrome's plugin docs
/// ask of agents, so Navidrome does not retry it; a failing musicrec is an error.
#[no_mangle]
pub extern "C" fn nd_get_similar_songs_by_track() -> i32 {
    answer(read_input().and_then(|req| {
        let mut song = Map::new();
        for key in ["id", "name", "artist", "mbid"] {
            if let Some(v) = req.get(key).filter(|v| v.is_string()) {
                song.insert(key.into(), v.clone());
            }
        }
        let count = req.get("count").and_then(Value::as_i64).unwrap_or(10).clamp(1, 1000);
        match post("/navidrome/similar", &json!({"song": song, "count": count})) {
            Ok(found) => {
                let songs: Vec<Value> = found
                    .get("matches")
                    .and_then(Value::as_array)
                    .map(|m| m.iter().filter_map(|x| x.get("song").cloned()).collect())
                    .unwrap_or_default();
                Ok(json!({ "songs": songs }))
            }
            Err((404, why)) | Err((409, why)) => {
                log(true, &format!("musicrec: no similar songs: {why}"));
                Ok(json!({"songs": []}))
            }
            Err((_, why)) => Err(why),
        }
    }))
}
