// The buyer page: the sale list at `/`, one sale at `/sales/{id}` with live
// stock, reserve with a countdown, confirm, cancel, and the waiting list.
"use strict";

(() => {
  const F = Flashdrop, $ = F.$;
  const state = { sale: null, offset: 0, hold: null, wait: null, token: null };
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
  async function showList() {
    $("#list-view").classList.remove("hidden");
    document.title = "Sales · Flashdrop";
    try {
      const { body: sales } = await F.api("GET", "/sales?limit=100");
      const rows = $("#sales");
      rows.replaceChildren();
      for (const s of sales) {
        const link = document.createElement("a");
        link.href = `/sales/${s.id}`; link.textContent = s.name;
        rows.append(F.row([link, F.badge(s.status), F.money(s.price_cents, s.currency),
          `${s.available} / ${s.total}`, F.when(s.starts_at)], [2, 3]));
      }
      $("#no-sales").classList.toggle("hidden", sales.length > 0);
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
    $("#reserve-btn").disabled = !signedIn() || !active || busy;
    $("#sign-in-hint").classList.toggle("hidden", signedIn());
    const canWait = sale.waitlist_enabled && sale.status === "sold_out" && signedIn() && !busy;
    $("#join-btn").classList.toggle("hidden", !canWait);
    $("#hold-card").classList.toggle("hidden", !state.hold);
    if (state.hold) F.text($("#hold-quantity"), state.hold.quantity);
    const waiting = state.wait && state.wait.status === "waiting";
    $("#wait-card").classList.toggle("hidden", !waiting);
    if (waiting) F.text($("#wait-position"), state.wait.position);
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
    $("#starts-in").classList.toggle("hidden", !(sale.status === "upcoming" && startsIn > 0));
    if (sale.status === "upcoming") F.text($("#starts-countdown"), F.duration(startsIn));
    if (state.hold) {
      const left = Date.parse(state.hold.expires_at) - serverNow();
      F.text($("#hold-countdown"), left > 0 ? `${F.duration(left)} left` : "time is up");
    }
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
          if (frame.status === "expired") F.say(msg, "Your hold expired before it was confirmed; the units went back.", "error");
          if (frame.status !== "confirmed") setHold(null);
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
    }
  }

  async function restore(id) {
    const rid = sessionStorage.getItem(`flashdrop.hold.${id}`);
    if (rid) {
      try {
        const { body: hold } = await F.api("GET", `/reservations/${rid}`);
        if (hold.status === "held") setHold(hold); else setHold(null);
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
        F.say(msg, `Held ${hold.quantity} unit(s). Confirm to buy.`, "ok");
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
        const { body: order } = await F.api("POST", `/reservations/${hold.reservation_id}/confirm`, undefined, { "Idempotency-Key": newKey() });
        setHold(null);
        state.wait = null;
        $("#order-card").classList.remove("hidden");
        F.text($("#order-summary"), `${order.quantity} unit(s), serial ${order.units.join(", ")}, ${F.money(order.total_cents, order.currency)}.`);
        F.say(msg, "Order placed. Thank you!", "ok");
        loadOrders(id);
      } catch (err) {
        showError(err);
        if (err.code === "reservation_expired") setHold(null);
      } finally { $("#confirm-btn").disabled = false; }
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
