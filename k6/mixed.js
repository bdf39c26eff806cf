// Watchers who act on the live feed: when stock shows up they reserve; some
// confirm, some cancel, some walk away so holds expire; when sold out they
// join the waiting list and confirm most promotions. Ends by checking
// through the admin summary that nothing was oversold.
//   BASE_URL, FLASHDROP_JWT_SECRET, BUYERS (300), TOTAL (200),
//   HOLD_SECONDS (3), DURATION (40s)
import http from 'k6/http';
import ws from 'k6/ws';
import { check } from 'k6';
import { Counter } from 'k6/metrics';
import { API, BASE, auth, token, createSale, assertNotOversold, summary } from './lib.js';

const DURATION = parseInt(__ENV.DURATION || '40s', 10);
const outcomes = new Counter('buyer_outcomes');

export const options = {
  scenarios: {
    buyers: {
      executor: 'per-vu-iterations', vus: Number(__ENV.BUYERS || 300), iterations: 1,
      maxDuration: `${DURATION + 60}s`,
    },
  },
  thresholds: {
    'http_req_duration{op:reserve}': ['p(95)<250'],
    'http_req_duration{op:confirm}': ['p(95)<500'],
    'http_req_duration{op:cancel}': ['p(95)<500'],
    'http_req_duration{op:join}': ['p(95)<500'],
    'http_reqs{op:reserve}': ['count>0'],
    'http_reqs{op:confirm}': ['count>0'],
    'http_reqs{op:cancel}': ['count>=0'],
    'http_reqs{op:join}': ['count>=0'],
    http_req_failed: ['rate<0.01'],
  },
  summaryTrendStats: ['med', 'p(95)', 'p(99)', 'max'],
};

export function setup() {
  return {
    saleId: createSale({
      total: Number(__ENV.TOTAL || 200), per_user_limit: 2,
      hold_seconds: Number(__ENV.HOLD_SECONDS || 3),
    }),
  };
}

function req(method, path, body, params, op) {
  return http.request(method, `${API}${path}`, body ? JSON.stringify(body) : null,
    Object.assign({ tags: { op, name: op } }, params));
}

export default function (data) {
  const buyer = `mixed-${__VU}`;
  const tok = token(buyer);
  const params = auth(tok);
  let holding = false;
  let done = false;
  const act = (rid) => {
    const roll = Math.random();
    if (roll < 0.5) {
      const c = req('POST', `/reservations/${rid}/confirm`, null, params, 'confirm');
      check(c, { 'confirm 201/410': (r) => r.status === 201 || r.status === 410 });
      outcomes.add(1, { outcome: c.status === 201 ? 'bought' : 'too_late' });
      done = c.status === 201;
    } else if (roll < 0.7) {
      req('DELETE', `/reservations/${rid}`, null, params, 'cancel');
      outcomes.add(1, { outcome: 'cancelled' });
    } else {
      outcomes.add(1, { outcome: 'abandoned' }); // the hold expires
    }
    holding = false;
  };
  const url = `${BASE.replace('http', 'ws')}/api/v1/sales/${data.saleId}/live?access_token=${tok}`;
  ws.connect(url, {}, (socket) => {
    socket.on('message', (text) => {
      const frame = JSON.parse(text);
      const stock = frame.type === 'snapshot' ? frame.sale : frame;
      if (done || holding) {
        if (frame.type === 'promoted') {
          if (Math.random() < 0.7) act(frame.reservation_id); else holding = false;
        }
        return;
      }
      if (frame.type === 'promoted') { holding = true; act(frame.reservation_id); return; }
      if ((frame.type === 'stock' || frame.type === 'snapshot') && stock.status !== 'ended') {
        holding = true;
        const r = req('POST', `/sales/${data.saleId}/reservations`, { quantity: 1 + (__VU % 2) }, params, 'reserve');
        if (r.status === 201 || r.status === 200) {
          act(r.json('reservation_id'));
        } else if (r.status === 409 && r.json('code') === 'sold_out') {
          const j = req('POST', `/sales/${data.saleId}/waitlist`, { quantity: 1 }, params, 'join');
          holding = j.status === 201 || j.status === 200; // wait for a promotion
        } else {
          holding = false;
          done = r.status === 409 && r.json('code') === 'limit_exceeded';
        }
      }
    });
    socket.setTimeout(() => socket.close(), DURATION * 1000);
  });
}

export function teardown(data) {
  assertNotOversold(data.saleId);
}

export function handleSummary(data) {
  return { stdout: summary(data, ['reserve', 'confirm', 'cancel', 'join']) };
}
