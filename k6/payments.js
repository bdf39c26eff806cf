// Buyers of a sale that takes payment: reserve one unit, ask for the
// payment intent, then the provider's signed webhook says the payment
// succeeded (PAY_RATIO), failed, or nothing comes (abandoned: the hold
// expires at its extended deadline). A share of the successes is delivered
// twice, as providers do. Each iteration is a new buyer.
//   BASE_URL, FLASHDROP_JWT_SECRET, FLASHDROP_PAYMENT_WEBHOOK_SECRET,
//   VUS (100), DURATION (30s), TOTAL (units), PAY_RATIO (0.7),
//   FAIL_RATIO (0.15; the rest abandon), DUPLICATE_RATIO (0.2)
import crypto from 'k6/crypto';
import http from 'k6/http';
import { check } from 'k6';
import { API, auth, token, createSale, assertNotOversold, summary } from './lib.js';

const WEBHOOK_SECRET = __ENV.FLASHDROP_PAYMENT_WEBHOOK_SECRET;
const PAY_RATIO = Number(__ENV.PAY_RATIO ?? 0.7);
const FAIL_RATIO = Number(__ENV.FAIL_RATIO ?? 0.15);
const DUPLICATE_RATIO = Number(__ENV.DUPLICATE_RATIO ?? 0.2);

export const options = {
  scenarios: {
    payers: {
      executor: 'constant-vus',
      vus: Number(__ENV.VUS || 100),
      duration: __ENV.DURATION || '30s',
    },
  },
  thresholds: {
    'http_req_duration{op:reserve}': ['p(95)<250'],
    'http_req_duration{op:intent}': ['p(95)<500'],
    'http_req_duration{op:webhook}': ['p(95)<500'],
    'http_reqs{op:reserve}': ['count>0'],
    'http_reqs{op:intent}': ['count>0'],
    'http_reqs{op:webhook}': ['count>0'],
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
  },
  summaryTrendStats: ['med', 'p(95)', 'p(99)', 'max'],
};

/// The provider's webhook: the body as signed, and its header.
function deliver(event) {
  if (!WEBHOOK_SECRET) throw new Error('set FLASHDROP_PAYMENT_WEBHOOK_SECRET');
  const body = JSON.stringify(event);
  const t = Math.floor(Date.now() / 1000);
  const v1 = crypto.hmac('sha256', WEBHOOK_SECRET, `${t}.${body}`, 'hex');
  return http.post(`${API}/payments/webhook`, body, {
    headers: { 'Content-Type': 'application/json', 'Flashdrop-Signature': `t=${t},v1=${v1}` },
    tags: { op: 'webhook', name: 'webhook' },
  });
}

export function setup() {
  const saleId = createSale({
    total: Number(__ENV.TOTAL || 10000000), per_user_limit: 1,
    payment: 'webhook', payment_seconds: 30,
  });
  return { saleId };
}

export default function (data) {
  const buyer = `k6-pay-${__VU}-${__ITER}`;
  const params = auth(token(buyer));
  const res = http.post(`${API}/sales/${data.saleId}/reservations`, JSON.stringify({ quantity: 1 }),
    Object.assign({ tags: { op: 'reserve', name: 'reserve' } }, params));
  check(res, { 'reserve answered 201 or 409': (r) => r.status === 201 || r.status === 409 });
  if (res.status !== 201) return;
  const rid = res.json('reservation_id');
  const intent = http.post(`${API}/reservations/${rid}/payment`, null,
    Object.assign({ tags: { op: 'intent', name: 'intent' } }, params));
  check(intent, { 'intent answered 201': (r) => r.status === 201 });
  if (intent.status !== 201) return;
  const { payment_id, amount_cents, currency } = intent.json();
  const roll = Math.random();
  if (roll >= PAY_RATIO + FAIL_RATIO) return; // abandoned: expires
  const status = roll < PAY_RATIO ? 'succeeded' : 'failed';
  const event = { event_id: `evt-${buyer}`, payment_id, status, amount_cents, currency };
  const first = deliver(event);
  const expected = status === 'succeeded' ? 'confirmed' : 'released';
  check(first, { 'webhook settled the payment': (r) => r.status === 200 && r.json('outcome') === expected });
  if (Math.random() < DUPLICATE_RATIO) {
    const again = deliver(event);
    check(again, { 'a repeat changes nothing': (r) => r.status === 200 && r.json('duplicate') === true });
  }
}

export function teardown(data) {
  assertNotOversold(data.saleId);
  const refunds = http.get(`${API}/admin/refunds?sale_id=${data.saleId}`, auth(token('k6-admin', 'admin'))).json();
  console.log(`refunds due: ${refunds.length} (a payment within its deadline is never late here)`);
  if (refunds.length !== 0) throw new Error('refunds for payments inside their deadline');
}

export function handleSummary(data) {
  return { stdout: summary(data, ['reserve', 'intent', 'webhook']) };
}
