// Shared by the buyer and the operator page: the token, calls to the API,
// error messages people can act on, the live feed, formatting.
"use strict";

const Flashdrop = (() => {
  const TOKEN_KEY = "flashdrop.token";

  // A token arrives in the address fragment (#token=...): kept for this tab
  // only (sessionStorage, never a cookie) and removed from the address.
  function takeToken() {
    const m = location.hash.match(/token=([^&]+)/);
    if (m) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }
  function setToken(t) {
    if (t) sessionStorage.setItem(TOKEN_KEY, t.trim()); else sessionStorage.removeItem(TOKEN_KEY);
  }
  function claims(token) {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part));
    } catch (_) { return null; }
  }

  const MESSAGES = {
    invalid_request: (m) => `That was not accepted: ${m}`,
    unauthorized: () => "Sign in first: the token is missing, wrong or expired.",
    forbidden: () => "This account may not do that.",
    not_found: () => "Not found: it may have been removed, or the link is wrong.",
    method_not_allowed: () => "That action is not possible here.",
    sold_out: () => "Sold out. Join the waiting list to get units that come back.",
    limit_exceeded: () => "That is more than one buyer may have in this sale.",
    sale_not_active: () => "The sale is not open right now.",
    sale_started: () => "The sale has started; this can no longer change.",
    sale_ended: () => "The sale has ended.",
    invalid_change: (m) => `That change is not allowed: ${m}`,
    reservation_confirming: () => "Your order is being confirmed; one moment.",
    reservation_confirmed: () => "This hold is already an order.",
    payment_required: () => "This sale takes payment: pay for your hold.",
    reservation_exists: () => "You already hold units in this sale.",
    stock_available: () => "Units are free right now: reserve them instead of waiting.",
    waitlist_disabled: () => "This sale has no waiting list.",
    not_admitted: () => "This sale lets buyers in from its lobby: join the lobby and wait for your turn.",
    reservation_expired: () => "Your hold expired before it was confirmed; the units went back.",
    payload_too_large: () => "That request is too large.",
    rate_limited: (_, retry) => `Too many requests; try again in ${retry || "a few"} s.`,
    unavailable: () => "The shop is busy or a service is down; try again in a moment.",
    internal: () => "Something went wrong on our side; try again.",
  };

  class ApiError extends Error {
    constructor(status, code, message, retryAfter) {
      super((MESSAGES[code] || ((m) => m))(message, retryAfter));
      this.status = status; this.code = code; this.serverMessage = message;
    }
  }

  async function api(method, path, body, extraHeaders) {
    const headers = Object.assign({ Accept: "application/json" }, extraHeaders || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let resp;
    try {
      resp = await fetch(`/api/v1${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (_) {
      throw new ApiError(0, "unavailable", "network error");
    }
    if (resp.status === 204) return { status: 204, body: null };
    let data = null;
    try { data = await resp.json(); } catch (_) { /* not JSON */ }
    if (!resp.ok) {
      const code = (data && data.code) || (resp.status >= 500 ? "internal" : "invalid_request");
      throw new ApiError(resp.status, code, (data && data.message) || resp.statusText, resp.headers.get("Retry-After"));
    }
    return { status: resp.status, body: data };
  }

  // The live feed of one sale; reconnects with backoff. Stock frames carry
  // whole counts, and a busy server sends only the newest: a gap in `seq`
  // loses nothing. An older `seq` is stale; a snapshot starts afresh (the
  // server sends one after `restored`).
  function live(saleId, onFrame, onState) {
    let socket = null, lastSeq = null, stopped = false, delay = 500;
    function open() {
      const token = sessionStorage.getItem(TOKEN_KEY);
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const query = token ? `?access_token=${encodeURIComponent(token)}` : "";
      socket = new WebSocket(`${scheme}://${location.host}/api/v1/sales/${saleId}/live${query}`);
      socket.onopen = () => { delay = 500; onState && onState("live"); };
      socket.onmessage = (ev) => {
        let frame;
        try { frame = JSON.parse(ev.data); } catch (_) { return; }
        if (frame.type === "snapshot") lastSeq = frame.seq;
        else if (frame.type === "stock" && typeof frame.seq === "number") {
          if (lastSeq !== null && frame.seq <= lastSeq) return;
          lastSeq = frame.seq;
        }
        onFrame(frame);
      };
      // 1012: the instance is restarting; another serves the snapshot.
      // Jittered, so its watchers do not all come back at once.
      socket.onclose = (ev) => {
        onState && onState("reconnecting");
        if (stopped) return;
        if (ev.code === 1012) delay = 250;
        setTimeout(open, delay * (0.5 + Math.random()));
        delay = Math.min(delay * 2, 10000);
      };
    }
    open();
    return { stop() { stopped = true; if (socket) socket.close(); } };
  }

  function money(cents, currency) {
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(cents / 100);
    } catch (_) { return `${(cents / 100).toFixed(2)} ${currency}`; }
  }
  // A row whose one cell spans a table's `columns`.
  function across(content, columns) { const r = row([content]); r.firstChild.colSpan = columns; return r; }
  // A list's last row: the More sales button (`#more-sales`).
  function moreSales(columns, onClick) {
    const button = document.createElement("button");
    button.type = "button"; button.className = "secondary"; button.id = "more-sales";
    button.textContent = "More sales";
    button.addEventListener("click", onClick);
    return across(button, columns);
  }
  // A count in words: count(1, "unit") is "1 unit", count(2, "unit") "2 units".
  function count(n, one, many = `${one}s`) { return `${n} ${n === 1 ? one : many}`; }
  function when(iso) { return iso ? new Date(iso).toLocaleString() : "—"; }
  function text(el, value) { el.textContent = value === undefined || value === null ? "—" : String(value); }
  function $(sel) { return document.querySelector(sel); }
  // A sale's status as a badge: on `el`, or on a new span.
  function badge(status, el) {
    const b = el || document.createElement("span");
    b.className = `badge ${status}`; b.textContent = status.replace("_", " ");
    return b;
  }
  // A table row: cells are text or nodes; the columns in `numeric` align right.
  function row(cells, numeric) {
    const tr = document.createElement("tr");
    cells.forEach((c, i) => {
      const td = document.createElement("td");
      if (numeric && numeric.includes(i)) td.className = "num";
      if (c instanceof Node) td.append(c); else td.textContent = c;
      tr.append(td);
    });
    return tr;
  }
  function say(el, message, kind) { el.textContent = message || ""; el.className = `message ${kind || ""}`; }
  function duration(ms) {
    if (ms <= 0) return "0:00";
    const s = Math.ceil(ms / 1000), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? `${h}:${String(m).padStart(2, "0")}` : `${m}`) + `:${String(r).padStart(2, "0")}`;
  }

  return { takeToken, setToken, claims, api, ApiError, live, money, count, when, text, $, row, across, moreSales, badge, say, duration };
})();
