// Buyers reserve one or two units, then confirm (CONFIRM_RATIO) or abandon
// (cancel or let expire). Each iteration is a new buyer.
//   BASE_URL, FLASHDROP_JWT_SECRET, VUS (200), DURATION (30s), TOTAL (units),
//   CONFIRM_RATIO (0.7), SALE_ID (use an existing sale instead of creating one),
//   MODE=reserve (only reserve: measures the hold path alone)
import http from 'k6/http';
import { check } from 'k6';
import { API, auth, token, createSale, assertNotOversold, summary } from './lib.js';

const CONFIRM_RATIO = Number(__ENV.CONFIRM_RATIO ?? 0.7);

export const options = {
  scenarios: {
    buyers: {
      executor: 'constant-vus',
      vus: Number(__ENV.VUS || 200),
      duration: __ENV.DURATION || '30s',
    },
  },
  thresholds: {
    'http_req_duration{op:reserve}': ['p(95)<250'],
    'http_req_duration{op:confirm}': ['p(95)<500'],
    'http_req_duration{op:cancel}': ['p(95)<500'],
    'http_reqs{op:reserve}': ['count>0'],
    'http_reqs{op:confirm}': ['count>=0'],
    'http_reqs{op:cancel}': ['count>=0'],
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
  },
  summaryTrendStats: ['med', 'p(95)', 'p(99)', 'max'],
};

export function setup() {
  const saleId = __ENV.SALE_ID || createSale({ total: Number(__ENV.TOTAL || 10000000), per_user_limit: 2 });
  return { saleId };
}

export default function (data) {
  const buyer = `k6-${__VU}-${__ITER}`;
  const params = auth(token(buyer));
  const quantity = __ITER % 4 === 0 ? 2 : 1;
  const res = http.post(`${API}/sales/${data.saleId}/reservations`, JSON.stringify({ quantity }),
    Object.assign({ tags: { op: 'reserve', name: 'reserve' } }, params));
  check(res, { 'reserve answered 201 or 409': (r) => r.status === 201 || r.status === 409 });
  if (res.status !== 201 || __ENV.MODE === 'reserve') return;
  const rid = res.json('reservation_id');
  if (Math.random() < CONFIRM_RATIO) {
    const c = http.post(`${API}/reservations/${rid}/confirm`, null, Object.assign({ tags: { op: 'confirm', name: 'confirm' } }, params));
    check(c, { 'confirm answered 201': (r) => r.status === 201 });
  } else if (Math.random() < 0.5) {
    const d = http.del(`${API}/reservations/${rid}`, null, Object.assign({ tags: { op: 'cancel', name: 'cancel' } }, params));
    check(d, { 'cancel answered 204': (r) => r.status === 204 });
  }
}

export function teardown(data) {
  assertNotOversold(data.saleId);
}

export function handleSummary(data) {
  return { stdout: summary(data, ['reserve', 'confirm', 'cancel']) };
}
