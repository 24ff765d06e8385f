// autobahn|js (Node) joining by cookie: connects with the given Cookie header and only
// authmethods ["cookie"], prints the session's authid/authmethod/authprovider as one JSON line.
// Usage: node cookie.js <ws-url> <cookie-header> [ms]. Exits non-zero when the join fails.
'use strict';
const autobahn = require('autobahn');

const [url, cookie, limitMs] = process.argv.slice(2);
const timer = setTimeout(() => { console.error('timeout'); process.exit(2); },
                         Number(limitMs || 20000));
const conn = new autobahn.Connection({
  transports: [{ type: 'websocket', url, headers: { Cookie: cookie } }],
  realm: 'realm1', max_retries: 0, authmethods: ['cookie'],
});
let joined = false;
conn.onopen = (session, details) => {
  joined = true;
  console.log(JSON.stringify({ authid: details.authid, authmethod: details.authmethod,
                               authprovider: details.authprovider }));
  clearTimeout(timer);
  conn.close();
};
conn.onclose = (reason, details) => {
  if (!joined) {
    console.error(`closed: ${reason} ${JSON.stringify(details)}`);
    process.exit(1);
  }
  return true;
};
conn.open();
