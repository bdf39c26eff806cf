// The operator page: create, edit and close sales; for one sale, live counts
// and a chart over time (from the live feed), holds per second and the
// summary figures (from the summary, every 2 s), and its orders a page at a
// time.
"use strict";

(() => {
  const F = Flashdrop, $ = F.$;
  const msg = $("#message");
  const SERIES = [
    { key: "available", label: "available", color: "#137333" },
    { key: "held", label: "held", color: "#f0a202" },
    { key: "sold", label: "sold", color: "#0b63ce" },
    { key: "waitlist_length", label: "waiting", color: "#8e44ad" },
    { key: "holds_per_second", label: "holds / s", color: "#b3261e" },
  ];
  const WINDOW_MS = 5 * 60 * 1000;
  const state = { sale: null, feed: null, points: [], lastHolds: null, cursors: [null], page: 0, timer: null, salePages: 1 };
  const SALES_PAGE = 100;

  function showError(err) { F.say(msg, err.message, "error"); }
  const localInput = (date) => new Date(date.getTime() - date.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  const fromLocal = (value) => new Date(value).toISOString();

  // --- sign-in --------------------------------------------------------------
  const token = F.takeToken();
  const claims = token && F.claims(token);
  F.text($("#who"), claims ? `Signed in as ${claims.sub} (${claims.role})` : "Not signed in");
  $("#sign-in").addEventListener("submit", (ev) => {
    ev.preventDefault();
    F.setToken($("#token-input").value);
    location.reload();
  });
  if (!claims || claims.role !== "admin") {
    $("#sign-in").classList.remove("hidden");
    $("#console").classList.add("hidden");
    F.say(msg, "Sign in with an admin token to run sales.", "error");
    return;
  }

  // --- sales ----------------------------------------------------------------
  // The pages of sales the operator has opened (each refresh reads them
  // all again), newest start first.
  async function loadSales(selectId) {
    try {
      const sales = [];
      let more = false;
      for (let page = 0; page < state.salePages; page++) {
        const after = sales.length ? `&after=${encodeURIComponent(sales[sales.length - 1].id)}` : "";
        const { body } = await F.api("GET", `/admin/sales?limit=${SALES_PAGE}${after}`);
        sales.push(...body);
        more = body.length === SALES_PAGE;
        if (!more) break;
      }
      const rows = $("#sales");
      rows.replaceChildren();
      for (const s of sales) {
        const button = document.createElement("button");
        button.type = "button"; button.className = "secondary"; button.textContent = s.name;
        button.dataset.sale = s.id;
        button.addEventListener("click", () => select(s.id));
        rows.append(F.row([button, F.badge(s.status), `${s.sold} / ${s.total}`], [2]));
      }
      if (sales.length === 0) {
        const none = F.across("No sales yet: create one below.", 3);
        none.firstChild.className = "muted";
        rows.append(none);
      }
      if (more) rows.append(F.moreSales(3, () => { state.salePages++; loadSales(); }));
      if (selectId) select(selectId);
    } catch (err) { showError(err); }
  }

  const now = new Date();
  $("#c-starts").value = localInput(new Date(now.getTime() + 60 * 1000));
  $("#c-ends").value = localInput(new Date(now.getTime() + 2 * 3600 * 1000));
  $("#create-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {
      name: $("#c-name").value,
      price_cents: Number($("#c-price").value),
      currency: $("#c-currency").value,
      total: Number($("#c-total").value),
      per_user_limit: Number($("#c-limit").value),
      hold_seconds: Number($("#c-hold").value),
      starts_at: fromLocal($("#c-starts").value),
      ends_at: fromLocal($("#c-ends").value),
      waitlist_enabled: $("#c-waitlist").checked,
    };
    try {
      const { body: sale } = await F.api("POST", "/admin/sales", body);
      F.say(msg, `Sale “${sale.name}” created.`, "ok");
      loadSales(sale.id);
    } catch (err) { showError(err); }
  });

  // --- one sale -------------------------------------------------------------
  function render(s) {
    state.sale = Object.assign(state.sale || {}, s);
    const sale = state.sale;
    F.text($("#d-name"), sale.name);
    F.badge(sale.status, $("#d-status"));
    F.text($("#d-id"), sale.id);
    F.text($("#d-window"), `${F.when(sale.starts_at)} – ${F.when(sale.ends_at)}`);
    ["available", "held", "sold"].forEach((k) => F.text($(`#${k}`), sale[k]));
    F.text($("#waitlist-length"), sale.waitlist_length);
  }

  function point(values) {
    const last = state.points[state.points.length - 1] || {};
    const p = Object.assign({}, last, values, { t: Date.now() });
    state.points.push(p);
    const cutoff = Date.now() - WINDOW_MS;
    while (state.points.length > 2 && state.points[0].t < cutoff) state.points.shift();
    draw();
  }

  function draw() {
    const canvas = $("#chart");
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    canvas.width = w * ratio; canvas.height = h * ratio;
    const g = canvas.getContext("2d");
    g.scale(ratio, ratio);
    g.clearRect(0, 0, w, h);
    const pts = state.points;
    canvas.dataset.points = String(pts.length);
    const pad = { l: 48, r: 10, t: 10, b: 22 };
    // From the first point (at least 20 s), up to the last five minutes.
    const t1 = Date.now();
    const span = Math.min(WINDOW_MS, Math.max(20000, pts.length ? t1 - pts[0].t : 0));
    const t0 = t1 - span;
    let highest = 1;
    for (const p of pts) for (const s of SERIES) if (typeof p[s.key] === "number") highest = Math.max(highest, p[s.key]);
    const step = roundStep(highest), max = step * Math.ceil(highest / step);
    const x = (t) => pad.l + ((t - t0) / span) * (w - pad.l - pad.r);
    const y = (v) => h - pad.b - (v / max) * (h - pad.t - pad.b);
    g.strokeStyle = "#d8dde3"; g.fillStyle = "#5b6470"; g.font = "11px system-ui, sans-serif"; g.lineWidth = 1;
    for (let v = 0; v <= max; v += step) {
      const yy = y(v);
      g.beginPath(); g.moveTo(pad.l, yy); g.lineTo(w - pad.r, yy); g.stroke();
      g.fillText(String(v), 4, yy + 4);
    }
    g.fillText(span >= 120000 ? `${Math.round(span / 60000)} min ago` : `${Math.round(span / 1000)} s ago`, pad.l, h - 6);
    g.fillText("now", w - pad.r - 22, h - 6);
    for (const s of SERIES) {
      g.strokeStyle = s.color; g.lineWidth = 2; g.beginPath();
      let started = false;
      for (const p of pts) {
        if (typeof p[s.key] !== "number") continue;
        const xx = x(Math.max(p.t, t0)), yy = y(p[s.key]);
        if (started) g.lineTo(xx, yy); else { g.moveTo(xx, yy); started = true; }
      }
      if (started) { g.lineTo(x(t1), y(pts[pts.length - 1][s.key] ?? 0)); g.stroke(); }
    }
  }
  // The scale's step: 1, 2 or 5 times a power of ten, at least 1 (the
  // figures are counts), so that at most five steps reach `highest`.
  function roundStep(highest) {
    const rough = highest / 5;
    const unit = Math.pow(10, Math.floor(Math.log10(Math.max(rough, 1))));
    const step = [1, 2, 5, 10].map((m) => m * unit).find((s) => s >= rough);
    return Math.max(1, step);
  }
  function legend() {
    const el = $("#legend");
    el.replaceChildren(...SERIES.map((s) => {
      const span = document.createElement("span");
      span.innerHTML = `<i style="background:${s.color}"></i>`;
      span.append(s.label);
      return span;
    }));
  }

  const FIGURES = [
    ["units_sold", "units sold"], ["orders", "orders"], ["revenue_cents", "revenue"],
    ["holds_created", "holds made"], ["holds_confirmed", "confirmed"], ["holds_cancelled", "holds cancelled"],
    ["holds_expired", "expired"], ["conversion", "conversion"], ["promotions", "promotions"],
    ["waitlist_joins", "waiting-list joins"], ["peak_reservations_per_second", "peak holds / s"],
    ["sold_out_after_seconds", "sold out after"], ["orders_cancelled", "orders cancelled"],
    ["units_returned", "units returned"], ["refunds_due", "refunds due"],
  ];
  async function summary() {
    const sale = state.sale;
    if (!sale) return;
    try {
      const { body: s } = await F.api("GET", `/admin/sales/${sale.id}/summary`);
      const el = $("#figures");
      el.replaceChildren(...FIGURES.map(([key, label]) => {
        const div = document.createElement("div");
        let v = s[key];
        if (key === "revenue_cents") v = F.money(v, s.currency);
        else if (key === "conversion") v = `${Math.round(v * 100)} %`;
        else if (key === "sold_out_after_seconds") v = v === undefined ? "—" : `${v.toFixed(1)} s`;
        div.innerHTML = "<b></b><span></span>";
        div.firstChild.textContent = v; div.lastChild.textContent = label;
        div.dataset.figure = key;
        return div;
      }));
      const t = Date.now();
      if (state.lastHolds) {
        const rate = (s.holds_created - state.lastHolds.n) / ((t - state.lastHolds.t) / 1000);
        point({ holds_per_second: Math.max(0, Math.round(rate * 10) / 10) });
      }
      state.lastHolds = { n: s.holds_created, t };
    } catch (err) { showError(err); }
  }

  // A live order's Cancel button; a cancelled one's reason.
  function orderStatus(o) {
    if (o.status === "cancelled") {
      const span = document.createElement("span");
      span.className = "muted";
      span.textContent = `cancelled: ${o.cancel_reason}`;
      return span;
    }
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "danger small";
    btn.textContent = "Cancel";
    btn.dataset.cancel = o.order_id;
    btn.addEventListener("click", async () => {
      const reason = prompt(`Cancel order …${o.order_id.slice(-8)}? Its units go to the waiting list first. Reason:`, "cancelled by the shop");
      if (!reason) return;
      try {
        await F.api("POST", `/admin/orders/${o.order_id}/cancel`, { reason });
        F.say(msg, `Order …${o.order_id.slice(-8)} cancelled; its units went back.`, "ok");
        orders(state.page);
        summary();
      } catch (err) { showError(err); }
    });
    return btn;
  }

  async function orders(page) {
    const sale = state.sale;
    const cursor = state.cursors[page];
    try {
      const q = `?limit=20${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
      const { body } = await F.api("GET", `/admin/sales/${sale.id}/orders${q}`);
      state.page = page;
      state.cursors[page + 1] = body.next_cursor || null;
      const rows = $("#orders");
      rows.replaceChildren();
      for (const o of body.orders) {
        rows.append(F.row([o.order_id.slice(-8), o.units.join(", "), o.quantity,
          F.money(o.total_cents, o.currency), F.when(o.created_at), orderStatus(o)], [2, 3]));
      }
      $("#orders-next").disabled = !body.next_cursor;
      $("#orders-first").disabled = page === 0;
    } catch (err) { showError(err); }
  }
  $("#orders-next").addEventListener("click", () => orders(state.page + 1));
  $("#orders-first").addEventListener("click", () => orders(0));

  async function select(id) {
    if (state.feed) state.feed.stop();
    clearInterval(state.timer);
    Object.assign(state, { sale: null, points: [], lastHolds: null, cursors: [null], page: 0 });
    $("#detail").classList.remove("hidden");
    try {
      const { body: sale } = await F.api("GET", `/sales/${id}`);
      render(sale);
      $("#e-name").value = sale.name;
      $("#e-total").value = sale.total;
      $("#e-limit").value = sale.per_user_limit;
      $("#e-hold").value = sale.hold_seconds;
      $("#e-ends").value = localInput(new Date(sale.ends_at));
    } catch (err) { showError(err); return; }
    state.feed = F.live(id, (frame) => {
      if (frame.type === "snapshot") { render(frame.sale); point(pick(frame.sale)); }
      if (frame.type === "stock") { render(frame); point(pick(frame)); }
    }, (s) => F.text($("#live-state"), s === "live" ? "live" : "reconnecting…"));
    summary();
    orders(0);
    let ticks = 0;
    state.timer = setInterval(() => {
      summary();
      if (state.page === 0) orders(0);
      if (++ticks % 3 === 0) loadSales();
    }, 2000);
  }
  const pick = (s) => ({ available: s.available, held: s.held, sold: s.sold, waitlist_length: s.waitlist_length });

  $("#edit-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const sale = state.sale;
    const change = {};
    const name = $("#e-name").value, total = Number($("#e-total").value), limit = Number($("#e-limit").value);
    const hold = Number($("#e-hold").value), ends = fromLocal($("#e-ends").value);
    if (name !== sale.name) change.name = name;
    if (total !== sale.total) change.total = total;
    if (limit !== sale.per_user_limit) change.per_user_limit = limit;
    if (hold !== sale.hold_seconds) change.hold_seconds = hold;
    if (Date.parse(ends) !== Date.parse(sale.ends_at)) change.ends_at = ends;
    if (Object.keys(change).length === 0) { F.say(msg, "Nothing changed."); return; }
    try {
      const { body: updated } = await F.api("PATCH", `/admin/sales/${sale.id}`, change);
      render(updated);
      F.say(msg, "Saved.", "ok");
      loadSales();
    } catch (err) { showError(err); }
  });
  $("#close-btn").addEventListener("click", async () => {
    const sale = state.sale;
    if (!confirm(`Close “${sale.name}” now? No new holds; live holds may still be confirmed.`)) return;
    try {
      const { body: closed } = await F.api("POST", `/admin/sales/${sale.id}/close`);
      render(closed);
      F.say(msg, "The sale is closed.", "ok");
      loadSales();
    } catch (err) { showError(err); }
  });

  // --- webhooks -------------------------------------------------------------
  // Each endpoint with its state and its last deliveries; a disabled one
  // says why and can be enabled again.
  async function loadWebhooks() {
    try {
      const { body: endpoints } = await F.api("GET", "/admin/webhooks");
      const box = $("#webhooks");
      const cards = [];
      for (const e of endpoints) {
        const card = document.createElement("div");
        card.className = "hook";
        card.dataset.endpoint = e.id;
        const head = document.createElement("div");
        head.className = "row";
        const url = document.createElement("code");
        url.textContent = e.url;
        head.append(url, F.badge(e.enabled ? "enabled" : "disabled"));
        if (!e.enabled) {
          const enable = document.createElement("button");
          enable.type = "button"; enable.className = "secondary small"; enable.textContent = "Enable";
          enable.addEventListener("click", async () => {
            try { await F.api("POST", `/admin/webhooks/${e.id}/enable`); loadWebhooks(); } catch (err) { showError(err); }
          });
          head.append(enable);
        }
        card.append(head);
        if (e.disabled_reason) {
          const why = document.createElement("p");
          why.className = "muted"; why.textContent = e.disabled_reason;
          card.append(why);
        }
        const { body: deliveries } = await F.api("GET", `/admin/webhooks/${e.id}/deliveries?limit=5`);
        const table = document.createElement("table");
        table.className = "deliveries";
        const rows = document.createElement("tbody");
        for (const d of deliveries) {
          const last = d.attempts[d.attempts.length - 1] || {};
          const answer = last.status ? `HTTP ${last.status}` : (last.error || "");
          rows.append(F.row([d.type || "", `#${d.sequence}`, F.badge(d.state), answer,
            F.count(d.attempts.length, "try", "tries")], [1]));
        }
        if (!deliveries.length) rows.append(F.row(["No deliveries yet"]));
        table.append(rows);
        card.append(table);
        cards.push(card);
      }
      if (!cards.length) {
        const none = document.createElement("p");
        none.className = "muted"; none.textContent = "No endpoints: messages wait in the outbox for none.";
        cards.push(none);
      }
      box.replaceChildren(...cards);
    } catch (err) { showError(err); }
  }
  $("#hook-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const { body } = await F.api("POST", "/admin/webhooks", { url: $("#hook-url").value });
      const shown = $("#hook-secret");
      shown.textContent = `Secret for ${body.url} (shown once): ${body.secret}`;
      shown.classList.remove("hidden");
      $("#hook-url").value = "";
      loadWebhooks();
    } catch (err) { showError(err); }
  });
  setInterval(loadWebhooks, 3000);
  loadWebhooks();

  window.addEventListener("resize", draw);
  setInterval(() => { if (state.sale) draw(); }, 1000);
  legend();
  loadSales();
})();
