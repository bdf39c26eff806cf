// A lobby sale on launch day: every buyer joins the lobby before the start,
// watches their place over the WebSocket, and reserves and confirms when
// let in. Measures the wait for admission and checks that every admitted
// buyer could buy (no 403), that the draw is complete, and that nothing
// was oversold.
//   BASE_URL, FLASHDROP_JWT_SECRET, BUYERS (1000), JOIN_SECONDS (lobby time
//   before the start, 15), ADMIT (admissions/s, 50), TOTAL (units, 300)
import http from 'k6/http';
import ws from 'k6/ws';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { API, BASE, auth, token, assertNotOversold } from './lib.js';

const BUYERS = Number(__ENV.BUYERS || 1000);
const JOIN_SECONDS = Number(__ENV.JOIN_SECONDS || 15);
const ADMIT = Number(__ENV.ADMIT || 50);
const TOTAL = Number(__ENV.TOTAL || 300);
// Everyone can be let in, plus room for the last turn to be used.
const RUN_SECONDS = JOIN_SECONDS + Math.ceil(BUYERS / ADMIT) + 60;

const admissionWait = new Trend('admission_wait', true);
const placeFrames = new Counter('lobby_place_frames');
const bought = new Counter('bought');
const toldSoldOut = new Counter('told_sold_out');

export const options = {
  scenarios: {
    buyers: {
      executor: 'per-vu-iterations', vus: BUYERS, iterations: 1,
      maxDuration: `${RUN_SECONDS}s`,
    },
  },
  thresholds: {
    checks: ['rate>0.99'],
    // Every buyer joins in the same second: a burst, not a steady load
    // (on 2 cores shared with k6, p95 medians of three runs near 1 s).
    'http_req_duration{op:join}': ['p(95)<1500'],
    'http_req_duration{op:reserve}': ['p(95)<250'],
  },
  summaryTrendStats: ['med', 'p(95)', 'p(99)', 'max'],
};

export function setup() {
  const now = Date.now();
  const starts = now + JOIN_SECONDS * 1000;
  const body = {
    name: 'k6 lobby drop', price_cents: 4999, currency: 'EUR', total: TOTAL,
    per_user_limit: 1, hold_seconds: 60, waitlist_enabled: true,
    lobby_opens_at: new Date(now).toISOString(),
    starts_at: new Date(starts).toISOString(),
    ends_at: new Date(now + 3600 * 1000).toISOString(),
    admit_per_second: ADMIT, admission_seconds: 60,
  };
  const res = http.post(`${API}/admin/sales`, JSON.stringify(body), auth(token('k6-admin', 'admin')));
  if (res.status !== 201) throw new Error(`create sale: ${res.status} ${res.body}`);
  const commitment = http.get(`${API}/sales/${res.json('id')}/lobby`).json('seed_sha256');
  return { saleId: res.json('id'), starts, commitment };
}

function buy(data, params) {
  const res = http.post(`${API}/sales/${data.saleId}/reservations`, JSON.stringify({ quantity: 1 }),
    Object.assign({ tags: { op: 'reserve', name: 'reserve' } }, params));
  // Let in, a buyer is never refused for want of admission.
  check(res, { 'an admitted buyer may reserve (201 or 409 sold out)': (r) => r.status === 201 || r.status === 409 });
  if (res.status !== 201) return;
  const c = http.post(`${API}/reservations/${res.json('reservation_id')}/confirm`, null,
    Object.assign({ tags: { op: 'confirm', name: 'confirm' } }, params));
  check(c, { 'confirm answered 201': (r) => r.status === 201 });
  if (c.status === 201) bought.add(1);
}

export default function (data) {
  const buyer = `k6-lobby-${__VU}`;
  const tok = token(buyer);
  const params = auth(tok);
  // Everyone joins at once, early in the lobby's time; the draw decides.
  const join = http.post(`${API}/sales/${data.saleId}/lobby`, null,
    Object.assign({ tags: { op: 'join', name: 'join' } }, params));
  check(join, { 'join answered 201': (r) => r.status === 201 });
  const url = `${BASE.replace('http', 'ws')}/api/v1/sales/${data.saleId}/live?access_token=${tok}`;
  ws.connect(url, {}, (socket) => {
    socket.on('message', (text) => {
      const frame = JSON.parse(text);
      if (frame.type !== 'lobby') return;
      if (frame.status === 'queued') placeFrames.add(1);
      if (frame.status === 'admitted') {
        admissionWait.add(Date.now() - data.starts);
        buy(data, params);
        socket.close();
      } else if (frame.status === 'sold_out' || frame.status === 'expired') {
        if (frame.status === 'sold_out') toldSoldOut.add(1);
        socket.close();
      }
    });
    socket.setTimeout(() => socket.close(), (RUN_SECONDS - 5) * 1000);
  });
}

export function teardown(data) {
  const draw = http.get(`${API}/sales/${data.saleId}/lobby/draw`).json();
  const summary = http.get(`${API}/admin/sales/${data.saleId}/summary`, auth(token('k6-admin', 'admin'))).json();
  const sorted = draw.order.every((v, i) => i === 0 || draw.order[i - 1] < v);
  console.log(`draw: ${draw.order.length} values, sorted ${sorted}, seed_sha256 as committed ` +
    `${draw.seed_sha256 === data.commitment}; lobby: ${JSON.stringify(summary.lobby)}`);
  if (!sorted || draw.seed_sha256 !== data.commitment) throw new Error('the draw does not check out');
  assertNotOversold(data.saleId);
}
