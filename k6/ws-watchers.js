// Thousands of sockets on one sale's live feed while a stream of changes is
// driven; measures change-to-client latency from each frame's server `ts`.
//   BASE_URL, FLASHDROP_JWT_SECRET, WATCHERS (2000), RATE (changes/s, 5),
//   DURATION (30s)
import http from 'k6/http';
import ws from 'k6/ws';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { API, BASE, auth, token, createSale, assertNotOversold } from './lib.js';

const changeToClient = new Trend('change_to_client', true);
const frames = new Counter('stock_frames');
const DURATION = __ENV.DURATION || '30s';
const seconds = parseInt(DURATION, 10);

export const options = {
  scenarios: {
    watchers: {
      executor: 'per-vu-iterations', vus: Number(__ENV.WATCHERS || 2000), iterations: 1,
      maxDuration: `${seconds + 60}s`, exec: 'watch',
    },
    changes: {
      executor: 'constant-arrival-rate', rate: Number(__ENV.RATE || 5), timeUnit: '1s',
      duration: DURATION, startTime: '10s', preAllocatedVUs: 10, exec: 'change',
    },
  },
  thresholds: {
    change_to_client: ['p(99)<100'],
    ws_connecting: ['p(95)<1000'],
    checks: ['rate>0.99'],
  },
  summaryTrendStats: ['med', 'p(95)', 'p(99)', 'max'],
};

export function setup() {
  return { saleId: createSale({ total: 1000000, per_user_limit: 1, hold_seconds: 600 }) };
}

export function watch(data) {
  const url = `${BASE.replace('http', 'ws')}/api/v1/sales/${data.saleId}/live`;
  const res = ws.connect(url, {}, (socket) => {
    socket.on('message', (text) => {
      const frame = JSON.parse(text);
      if (frame.type === 'stock') {
        frames.add(1);
        changeToClient.add(Date.now() - frame.ts);
      }
    });
    socket.setTimeout(() => socket.close(), (seconds + 15) * 1000);
  });
  check(res, { 'upgraded (101)': (r) => r && r.status === 101 });
}

export function change(data) {
  const res = http.post(`${API}/sales/${data.saleId}/reservations`, JSON.stringify({ quantity: 1 }),
    Object.assign({ tags: { name: 'reserve' } }, auth(token(`watch-driver-${__VU}-${__ITER}`))));
  check(res, { 'reserve 201': (r) => r.status === 201 });
}

export function teardown(data) {
  assertNotOversold(data.saleId);
}
