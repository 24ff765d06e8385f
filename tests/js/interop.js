// autobahn|js against a geonode node: join, register/call, subscribe/publish, and talk to a
// Python (autobahn-python) session. Usage: node interop.js <ws-url> <json|msgpack|cbor> [ms]
// An http:// URL is a long-poll path: autobahn|js's long-poll transport (JSON only), with
// xhr2 as the browser's XMLHttpRequest.
// (ms: how long it may take, default 20000: the tests pass it scaled for a busy machine)
// Prints one JSON line with what it saw; exits non-zero on any failure.
'use strict';
const autobahn = require('autobahn');

const [url, serName, limitMs] = process.argv.slice(2);
const SERIALIZERS = {
  json: autobahn.serializer.JSONSerializer,
  msgpack: autobahn.serializer.MsgpackSerializer,
  cbor: autobahn.serializer.CBORSerializer,
};

const timer = setTimeout(() => { console.error('timeout'); process.exit(2); },
                         Number(limitMs || 20000));

const longpoll = url.startsWith('http');
if (longpoll) global.XMLHttpRequest = require('xhr2');

function connect() {
  return new Promise((resolve, reject) => {
    const conn = new autobahn.Connection(longpoll
      ? { transports: [{ type: 'longpoll', url }], realm: 'realm1', max_retries: 0 }
      : { url, realm: 'realm1', max_retries: 0, serializers: [new SERIALIZERS[serName]()] });
    conn.onopen = (session) => resolve([conn, session]);
    conn.onclose = (reason, details) => { reject(new Error(`closed: ${reason} ${JSON.stringify(details)}`)); return true; };
    conn.open();
  });
}

async function main() {
  const out = {};
  const [c1, a] = await connect();
  const [c2, b] = await connect();
  out.protocol = c1.transport.info.protocol;
  out.transport = c1.transport.info.type;

  await a.register('com.js.add', (args, kwargs) => args[0] + args[1] + (kwargs.extra || 0));
  out.sum = await b.call('com.js.add', [2, 3], { extra: 10 });

  let gotEvent;
  const event = new Promise((resolve) => { gotEvent = resolve; });
  await a.subscribe('com.js.topic', (args, kwargs, details) => gotEvent({ args, kwargs }));
  await b.publish('com.js.topic', [1, 'two', { three: 3 }], { k: 'v' }, { acknowledge: true });
  out.event = await event;

  try {
    await b.call('com.js.nothing');
    out.error = null;
  } catch (err) {
    out.error = err.error;
  }

  // Cross-language: a Python session registered com.py.echo and subscribed to com.py.topic.
  out.py = await b.call('com.py.echo', ['hi', 42]);
  await b.publish('com.py.topic', ['from js', serName], {}, { acknowledge: true });

  console.log(JSON.stringify(out));
  c1.close();
  c2.close();
  clearTimeout(timer);
  setTimeout(() => process.exit(0), 100);
}

main().catch((err) => { console.error(err && err.stack || err); process.exit(1); });
