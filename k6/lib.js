// Shared by the scenarios: HS256 tokens minted from FLASHDROP_JWT_SECRET, the
// base URL, and a printed summary with rates and percentiles per operation.
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import http from 'k6/http';

export const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8080';
export const API = `${BASE}/api/v1`;
const SECRET = __ENV.FLASHDROP_JWT_SECRET;

const HEADER = encoding.b64encode(JSON.stringify({ alg: 'HS256', typ: 'JWT' }), 'rawurl');

export function token(sub, role = 'buyer') {
  if (!SECRET) throw new Error('set FLASHDROP_JWT_SECRET');
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const body = encoding.b64encode(JSON.stringify({ sub, role, exp }), 'rawurl');
  const sig = crypto.hmac('sha256', SECRET, `${HEADER}.${body}`, 'base64rawurl');
  return `${HEADER}.${body}.${sig}`;
}

export function auth(tok) {
  return { headers: { Authorization: `Bearer ${tok}`, 'Content-Type': 'application/json' } };
}

// 409 (sold out, limit) and 410 (expired) are answers, not failures.
http.setResponseCallback(http.expectedStatuses(200, 201, 204, 409, 410));

/// Creates an active sale and returns its id.
export function createSale(fields) {
  const now = Date.now();
  const body = Object.assign({
    name: 'k6 drop', price_cents: 1999, currency: 'EUR', total: 1000,
    per_user_limit: 2, hold_seconds: 60, waitlist_enabled: true,
    starts_at: new Date(now - 1000).toISOString(),
    ends_at: new Date(now + 3600 * 1000).toISOString(),
  }, fields);
  const res = http.post(`${API}/admin/sales`, JSON.stringify(body), auth(token('k6-admin', 'admin')));
  if (res.status !== 201) throw new Error(`create sale: ${res.status} ${res.body}`);
  return res.json('id');
}

/// Checks through the admin summary and the live counts that nothing was
/// oversold: orders hold at most `total` units, and the counts add up.
export function assertNotOversold(saleId) {
  const admin = auth(token('k6-admin', 'admin'));
  const summary = http.get(`${API}/admin/sales/${saleId}/summary`, admin).json();
  const sale = http.get(`${API}/sales/${saleId}`).json();
  const ok = summary.units_sold <= summary.total && sale.sold === summary.units_sold &&
    sale.available + sale.held + sale.sold === sale.total;
  console.log(`sale ${saleId}: total ${summary.total} sold ${summary.units_sold} (orders ${summary.orders}, ` +
    `revenue ${summary.revenue_cents}) held ${sale.held} available ${sale.available}; holds ` +
    `${summary.holds_created} made, ${summary.holds_confirmed} confirmed, ${summary.holds_cancelled} cancelled, ` +
    `${summary.holds_expired} expired, ${summary.promotions} promotions, conversion ` +
    `${summary.conversion.toFixed(2)} -> ${ok ? 'not oversold' : 'OVERSOLD'}`);
  if (!ok) throw new Error('oversold');
}

function pct(values, name) {
  const v = values[name];
  return v === undefined ? '-' : v.toFixed(1);
}

/// One line per operation tag: requests/s and p50/p95/p99 in ms.
export function summary(data, ops) {
  const seconds = data.state.testRunDurationMs / 1000;
  const lines = [];
  for (const op of ops) {
    const trend = data.metrics[`http_req_duration{op:${op}}`];
    const count = data.metrics[`http_reqs{op:${op}}`];
    if (!trend || !count) continue;
    const v = trend.values;
    lines.push(`${op.padEnd(8)} ${(count.values.count / seconds).toFixed(0).padStart(7)} req/s  ` +
      `p50 ${pct(v, 'med')} ms  p95 ${pct(v, 'p(95)')} ms  p99 ${pct(v, 'p(99)')} ms  (n=${count.values.count})`);
  }
  return lines.join('\n') + '\n';
}
