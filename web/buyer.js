// The buyer page: the sale list at `/`, one sale at `/sales/{id}` with live
// stock, reserve with a countdown, confirm, cancel, the waiting list, and on
// a lobby sale the lobby: join, place, admission, and a check of the draw.
"use strict";

(() => {
  const F = Flashdrop, $ = F.$;
  const state = { sale: null, offset: 0, hold: null, wait: null, token: null, lobby: null, me: null };
  const msg = $("#message");
  const serverNow = () => Date.now() + state.offset;
  const newKey = () => (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2));

  function showError(err) { F.say(msg, err.message, "error"); }
  function signedIn() { return !!state.token; }

  function renderWho() {
    const c = state.token && F.claims(state.token);
    F.text($("#who"), c ? `Signed in as ${c.sub}${c.role === "admin" ? " (admin)" : ""}` : "Not signed in");
    $("#sign-in-toggle").textContent = c ? "Account" : "Sign in";
  }

  // --- sign-in --------------------------------------------------------------
  $("#sign-in-toggle").addEventListener("click", () => {
    $("#sign-in").classList.toggle("hidden");
    $("#token-input").focus();
  });
  $("#sign-in").addEventListener("submit", (ev) => {
    ev.preventDefault();
    F.setToken($("#token-input").value);
    location.reload();
  });
  $("#sign-out").addEventListener("click", () => { F.setToken(null); location.reload(); });

  // --- the list ---------------------------------------------------------------
  // A page of sales, newest start first; More sales adds the next.
  const SALES_PAGE = 100;
  async function showList(after) {
    $("#list-view").classList.remove("hidden");
    document.title = "Sales · Flashdrop";
    try {
      const from = after ? `&after=${encodeURIComponent(after)}` : "";
      const { body: sales } = await F.api("GET", `/sales?limit=${SALES_PAGE}${from}`);
      const rows = $("#sales");
      if (!after) rows.replaceChildren();
      $("#more-sales")?.closest("tr").remove();
      for (const s of sales) {
        const link = document.createElement("a");
        link.href = `/sales/${s.id}`; link.textContent = s.name;
        link.dataset.sale = s.id;
        rows.append(F.row([link, F.badge(s.status), F.money(s.price_cents, s.currency),
          `${s.available} / ${s.total}`, F.when(s.starts_at)], [2, 3]));
      }
      if (sales.length === SALES_PAGE) rows.append(F.moreSales(5, () => showList(sales[sales.length - 1].id)));
      $("#no-sales").classList.toggle("hidden", rows.children.length > 0);
    } catch (err) { showError(err); }
  }
  // --- one sale -------------------------------------------------------------
  function renderSale(s) {
    state.sale = Object.assign(state.sale || {}, s);
    const sale = state.sale;
    document.title = `${sale.name} · Flashdrop`;
    F.text($("#sale-name"), sale.name);
    F.badge(sale.status, $("#sale-status"));
    F.text($("#sale-price"), F.money(sale.price_cents, sale.currency));
    F.text($("#sale-limit"), sale.per_user_limit);
    F.text($("#sale-window"), `${F.when(sale.starts_at)} – ${F.when(sale.ends_at)}`);
    renderCounts(sale);
    $("#quantity").max = sale.per_user_limit;
    renderActions();
  }
  function renderCounts(c) {
    F.text($("#available"), c.available);
    F.text($("#held"), c.held);
    F.text($("#sold"), c.sold);
    F.text($("#waitlist-length"), c.waitlist_length);
  }
  function renderActions() {
    const sale = state.sale;
    if (!sale) return;
    const active = sale.status === "active";
    const busy = !!state.hold || (state.wait && state.wait.status === "waiting");
    // On a lobby sale, reserving and joining the line need an admission.
    const letIn = !sale.lobby || (state.me && state.me.status === "admitted");
    $("#reserve-btn").disabled = !signedIn() || !active || busy || !letIn;
    $("#sign-in-hint").classList.toggle("hidden", signedIn());
    const canWait = sale.waitlist_enabled && sale.status === "sold_out" && signedIn() && !busy && letIn;
    $("#join-btn").classList.toggle("hidden", !canWait);
    $("#hold-card").classList.toggle("hidden", !state.hold);
    if (state.hold) F.text($("#hold-units"), F.count(state.hold.quantity, "unit"));
    renderPayment();
    const waiting = state.wait && state.wait.status === "waiting";
    $("#wait-card").classList.toggle("hidden", !waiting);
    if (waiting) F.text($("#wait-position"), state.wait.position);
    renderLobby();
  }

  // --- the lobby ------------------------------------------------------------
  const LOBBY_TEXT = {
    lobby: "You are in the lobby. At the start a draw places everyone who joined before it; then buyers are let in, in that order.",
    queued: (me) => `Your place in line: ${me.position}. Your turn comes in about ${F.duration(me.eta_seconds * 1000)}.`,
    admitted: () => (state.hold ? "You are in: your hold is below." : "Your turn: reserve before the time runs out."),
    expired: "Your turn ran out before you reserved; it went to the next buyer.",
    sold_out: "Sold out: every unit is gone, so no turn will come. Thank you for waiting.",
  };
  function renderLobby() {
    const sale = state.sale, lobby = state.lobby;
    $("#lobby-card").classList.toggle("hidden", !sale || !sale.lobby || !lobby);
    if (!sale || !sale.lobby || !lobby) return;
    F.text($("#lobby-length"), lobby.lobby_length);
    F.text($("#lobby-admitted"), lobby.admitted);
    F.text($("#lobby-rate"), lobby.admit_per_second);
    F.text($("#lobby-commitment"), lobby.seed_sha256 || "published when the lobby opens");
    F.text($("#lobby-seed"), lobby.seed || "revealed at the start");
    $("#lobby-verify-btn").disabled = !lobby.seed;
    const me = state.me, status = me ? me.status : "not_listed";
    const open = Date.parse(lobby.opens_at) <= serverNow();
    const over = sale.status === "ended" || sale.status === "sold_out";
    let text;
    if (!signedIn()) text = "Sign in to take a place in the lobby.";
    else if (status !== "not_listed") text = typeof LOBBY_TEXT[status] === "function" ? LOBBY_TEXT[status](me) : LOBBY_TEXT[status];
    else if (!open) text = "The lobby opens soon; everyone who joins before the start has the same chance.";
    else if (over) text = "The sale is over.";
    else text = "Join the lobby to get a turn.";
    F.text($("#lobby-text"), text);
    $("#lobby-join-btn").classList.toggle("hidden", !signedIn() || status !== "not_listed" || over);
    $("#lobby-join-btn").disabled = !open;
    $("#lobby-card").dataset.status = status;
  }
  function lobbyCountdown() {
    const lobby = state.lobby, me = state.me;
    if (!lobby || !state.sale || !state.sale.lobby) return "";
    const now = serverNow(), opens = Date.parse(lobby.opens_at), starts = Date.parse(state.sale.starts_at);
    if (me && me.status === "admitted" && me.admission_expires_at && !state.hold) {
      const left = Date.parse(me.admission_expires_at) - now;
      return left > 0 ? `${F.duration(left)} left to reserve` : "time is up";
    }
    if (now < opens) return `Opens in ${F.duration(opens - now)}`;
    if (now < starts) return `Draw in ${F.duration(starts - now)}`;
    return "";
  }
  async function loadLobby(id) {
    try {
      const { body: lobby } = await F.api("GET", `/sales/${id}/lobby`);
      state.lobby = lobby;
      // The commitment as first seen, to check the revealed seed against.
      const noted = `flashdrop.commitment.${id}`;
      if (lobby.seed_sha256 && !lobby.seed && !sessionStorage.getItem(noted)) sessionStorage.setItem(noted, lobby.seed_sha256);
    } catch (err) { showError(err); }
    if (signedIn()) {
      try { state.me = (await F.api("GET", `/sales/${id}/lobby/me`)).body; } catch (_) { /* shown as not listed */ }
    }
    renderActions();
  }
  const toHex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
  // The check the README describes, in the browser, with the draw's index
  // and one page (what a buyer needs, however large the crowd): the seed
  // hashes to the commitment, the index's pages are in order, and the
  // buyer's own page hashes to what the index says and holds their value.
  async function verifyDraw(id) {
    const out = $("#lobby-verdict");
    if (!window.crypto || !crypto.subtle) {
      F.say(out, "This browser allows the check only over HTTPS or on localhost; the README's snippet does it from a terminal.", "error");
      return;
    }
    try {
      const { body: index } = await F.api("GET", `/sales/${id}/lobby/draw/index`);
      const enc = new TextEncoder();
      const sha = async (text) => toHex(await crypto.subtle.digest("SHA-256", enc.encode(text)));
      const commitment = sessionStorage.getItem(`flashdrop.commitment.${id}`) || state.lobby.seed_sha256;
      const committed = (await sha(index.seed)) === commitment;
      const pages = index.pages;
      const ordered = pages.every((p, i) => p.first <= p.last && (i === 0 || pages[i - 1].last < p.first));
      const lines = [
        committed ? "The seed hashes to the published SHA-256." : "The seed does NOT hash to the published SHA-256.",
        ordered ? `The index lists ${pages.length} page${pages.length === 1 ? "" : "s"} for ${index.count} values, in order.` : "The index's pages are NOT in order.",
      ];
      let ok = committed && ordered;
      const c = state.token && F.claims(state.token);
      if (c) {
        const key = await crypto.subtle.importKey("raw", enc.encode(index.seed), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
        const mine = toHex(await crypto.subtle.sign("HMAC", key, enc.encode(c.sub)));
        const summary = pages.find((p) => p.first <= mine && mine <= p.last);
        const { body: page } = summary ? await F.api("GET", `/sales/${id}/lobby/draw/pages/${summary.page}`) : { body: null };
        const at = page ? page.order.indexOf(mine) : -1;
        if (at < 0) {
          lines.push("Your value is not in the draw (you joined after the start, or not at all).");
        } else {
          const matches = (await sha(page.order.join("\n"))) === summary.sha256
            && page.order.every((v, i) => i === 0 || page.order[i - 1] < v);
          ok = ok && matches;
          lines.push(matches ? `Your page matches the index, and your value ${mine.slice(0, 12)}… is place ${page.first_place + at} of ${index.count}.`
            : "Your page does NOT match the index.");
        }
      }
      F.say(out, lines.join(" "), ok ? "ok" : "error");
    } catch (err) { F.say(out, err.message, "error"); }
  }

  // A sale that takes payment: the hold's step is Pay, then waiting for
  // the provider, with the extended deadline.
  function renderPayment() {
    const paid = state.sale && state.sale.payment === "webhook";
    const intent = state.hold && state.hold.intent;
    F.text($("#confirm-btn"), paid ? (intent ? "Waiting for payment…" : "Pay") : "Confirm order");
    $("#confirm-btn").disabled = !!intent;
    F.text($("#hold-step"), paid ? (intent ? "Pay with your payment provider before the time runs out:" : "Pay before the time runs out:")
      : "Confirm before the time runs out:");
    $("#payment-box").classList.toggle("hidden", !intent);
    if (intent) {
      F.text($("#payment-id"), intent.payment_id);
      F.text($("#payment-amount"), F.money(intent.amount_cents, intent.currency));
    }
  }

  async function pay(hold) {
    const { body: intent } = await F.api("POST", `/reservations/${hold.reservation_id}/payment`);
    setHold(Object.assign({}, hold, { status: "paying", expires_at: intent.expires_at, intent }));
    F.say(msg, "Your time was extended for the payment.", "ok");
  }

  function ordered(order) {
    setHold(null);
    state.wait = null;
    $("#order-card").classList.remove("hidden");
    F.text($("#order-summary"), `${F.count(order.quantity, "unit")}, ${order.units.length === 1 ? "serial" : "serials"} ${order.units.join(", ")}, ${F.money(order.total_cents, order.currency)}.`);
    F.say(msg, "Order placed. Thank you!", "ok");
    loadOrders(state.sale.id);
  }

  // The provider's webhook confirmed a paid hold: its order, from the list.
  async function paidFor(rid) {
    try {
      const { body: orders } = await F.api("GET", "/me/orders?limit=50");
      const order = orders.find((o) => o.reservation_id === rid);
      if (order) ordered(order); else setHold(null);
    } catch (_) { setHold(null); }
  }

  function setHold(hold) {
    state.hold = hold;
    const key = `flashdrop.hold.${state.sale.id}`;
    if (hold) sessionStorage.setItem(key, hold.reservation_id); else sessionStorage.removeItem(key);
    renderActions();
    tick();
  }

  function tick() {
    const sale = state.sale;
    if (!sale) return;
    const startsIn = Date.parse(sale.starts_at) - serverNow();
    // The start came: the sale's status as the server has it now.
    if (sale.status === "upcoming" && startsIn <= 0) refreshSale();
    $("#starts-in").classList.toggle("hidden", !(sale.status === "upcoming" && startsIn > 0));
    if (sale.status === "upcoming") F.text($("#starts-countdown"), F.duration(startsIn));
    if (state.hold) {
      const left = Date.parse(state.hold.expires_at) - serverNow();
      F.text($("#hold-countdown"), left > 0 ? `${F.duration(left)} left` : "time is up");
    }
    const lobbyLeft = lobbyCountdown();
    $("#lobby-countdown").classList.toggle("hidden", !lobbyLeft);
    F.text($("#lobby-countdown"), lobbyLeft);
    // The opening passed: the join button works now.
    if (state.lobby && !state.lobby.seed_sha256 && Date.parse(state.lobby.opens_at) <= serverNow()) {
      state.lobby.seed_sha256 = "…";
      loadLobby(state.sale.id);
    }
  }

  let refreshing = false;
  async function refreshSale() {
    if (refreshing) return;
    refreshing = true;
    try { renderSale((await F.api("GET", `/sales/${state.sale.id}`)).body); } catch (_) { /* the next tick tries again */ }
    setTimeout(() => { refreshing = false; }, 1000);
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "snapshot": renderSale(frame.sale); break;
      case "stock":
        renderSale({ available: frame.available, held: frame.held, sold: frame.sold,
          status: frame.status, waitlist_length: frame.waitlist_length });
        break;
      case "reservation":
        if (state.hold && frame.reservation_id === state.hold.reservation_id && frame.status !== "held") {
          const paying = !!state.hold.intent;
          if (frame.status === "expired") F.say(msg, "Your hold expired before it was confirmed; the units went back.", "error");
          if (frame.status === "cancelled" && paying) F.say(msg, "The payment did not go through; the units went back.", "error");
          if (frame.status === "confirmed" && paying) paidFor(state.hold.reservation_id);
          else if (frame.status !== "confirmed") setHold(null);
        }
        break;
      case "promoted":
        state.wait = { status: "promoted" };
        setHold({ reservation_id: frame.reservation_id, quantity: frame.quantity, expires_at: frame.expires_at });
        F.say(msg, "Your turn: units came back and are held for you. Confirm before the time runs out.", "ok");
        break;
      case "waitlist":
        state.wait = { status: frame.status, position: frame.position };
        if (frame.status === "closed") F.say(msg, "The sale closed; the waiting list has ended.", "error");
        renderActions();
        break;
      case "sale_closed":
        F.say(msg, "The sale was closed.", "error");
        break;
      case "lobby_figures":
        if (!state.lobby) break;
        if (frame.started && !state.lobby.seed) loadLobby(state.sale.id);
        if (frame.started && state.sale.status === "upcoming") refreshSale();
        Object.assign(state.lobby, { lobby_length: frame.lobby_length, admitted: frame.admitted });
        renderLobby();
        break;
      case "lobby": {
        const was = state.me && state.me.status;
        state.me = Object.assign(state.me || {}, frame);
        if (frame.status === "admitted" && was !== "admitted") {
          F.say(msg, "Your turn: reserve now.", "ok");
          $("#reserve-btn").focus();
        }
        renderActions();
        break;
      }
    }
  }

  async function restore(id) {
    const rid = sessionStorage.getItem(`flashdrop.hold.${id}`);
    if (rid) {
      try {
        const { body: hold } = await F.api("GET", `/reservations/${rid}`);
        if (hold.status === "held") setHold(hold);
        // A paying hold: asking again returns the same intent.
        else if (hold.status === "paying") await pay(hold);
        else setHold(null);
      } catch (_) { setHold(null); }
    }
    try {
      const { body: wait } = await F.api("GET", `/sales/${id}/waitlist/me`);
      state.wait = wait;
      if (wait.status === "promoted" && wait.reservation_id && !state.hold) {
        const { body: hold } = await F.api("GET", `/reservations/${wait.reservation_id}`);
        if (hold.status === "held") setHold(hold);
      }
      renderActions();
    } catch (_) { /* not in line */ }
    loadOrders(id);
  }

  async function loadOrders(id) {
    try {
      const { body: orders } = await F.api("GET", "/me/orders?limit=50");
      const mine = orders.filter((o) => o.sale_id === id);
      $("#orders-card").classList.toggle("hidden", mine.length === 0);
      const rows = $("#orders");
      rows.replaceChildren();
      for (const o of mine) {
        rows.append(F.row([o.order_id.slice(-8), o.quantity, F.money(o.total_cents, o.currency), F.when(o.created_at)], [1, 2]));
      }
    } catch (_) { /* orders are a convenience */ }
  }

  async function showSale(id) {
    $("#sale-view").classList.remove("hidden");
    try {
      const before = Date.now();
      const { body: sale } = await F.api("GET", `/sales/${id}`);
      state.offset = Date.parse(sale.server_time) - (before + Date.now()) / 2;
      renderSale(sale);
    } catch (err) { showError(err); return; }
    if (state.sale.lobby) await loadLobby(id);
    F.live(id, onFrame, (s) => F.text($("#live-state"), s === "live" ? "live" : "reconnecting…"));
    if (signedIn()) restore(id);
    setInterval(tick, 250);

    $("#reserve-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      F.say(msg, "");
      const quantity = Number($("#quantity").value);
      try {
        const { body: hold } = await F.api("POST", `/sales/${id}/reservations`, { quantity }, { "Idempotency-Key": newKey() });
        setHold(hold);
        F.say(msg, `Held ${F.count(hold.quantity, "unit")}. ${state.sale.payment === "webhook" ? "Pay" : "Confirm"} to buy.`, "ok");
        $("#confirm-btn").focus();
      } catch (err) {
        showError(err);
        if (err.code === "sold_out" && state.sale.waitlist_enabled) $("#join-btn").classList.remove("hidden");
      }
    });
    $("#confirm-btn").addEventListener("click", async () => {
      const hold = state.hold;
      if (!hold) return;
      $("#confirm-btn").disabled = true;
      try {
        if (state.sale.payment === "webhook") await pay(hold);
        else {
          const { body: order } = await F.api("POST", `/reservations/${hold.reservation_id}/confirm`, undefined, { "Idempotency-Key": newKey() });
          ordered(order);
        }
      } catch (err) {
        showError(err);
        if (err.code === "reservation_expired") setHold(null);
      } finally { renderPayment(); }
    });
    $("#cancel-btn").addEventListener("click", async () => {
      const hold = state.hold;
      if (!hold) return;
      try {
        await F.api("DELETE", `/reservations/${hold.reservation_id}`);
        setHold(null);
        F.say(msg, "Hold cancelled; the units went back.", "ok");
      } catch (err) { showError(err); if (err.code === "reservation_expired") setHold(null); }
    });
    $("#lobby-join-btn").addEventListener("click", async () => {
      try {
        const { body: me } = await F.api("POST", `/sales/${id}/lobby`);
        state.me = me;
        F.say(msg, me.status === "lobby" ? "You are in the lobby." : `You are in line at place ${me.position}.`, "ok");
        loadLobby(id);
      } catch (err) { showError(err); }
    });
    $("#lobby-verify-btn").addEventListener("click", () => verifyDraw(id));
    $("#join-btn").addEventListener("click", async () => {
      const quantity = Number($("#quantity").value);
      try {
        const { body: wait } = await F.api("POST", `/sales/${id}/waitlist`, { quantity });
        state.wait = wait;
        renderActions();
        F.say(msg, `You are in line at place ${wait.position}.`, "ok");
      } catch (err) { showError(err); }
    });
    $("#leave-btn").addEventListener("click", async () => {
      try {
        await F.api("DELETE", `/sales/${id}/waitlist/me`);
        state.wait = null;
        renderActions();
        F.say(msg, "You left the waiting list.", "ok");
      } catch (err) { showError(err); }
    });
  }

  state.token = F.takeToken();
  renderWho();
  const m = location.pathname.match(/^\/sales\/([0-9a-f]{24})\/?$/);
  if (m) showSale(m[1]); else showList();
})();
