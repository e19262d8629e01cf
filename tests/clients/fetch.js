// An agent using Node's fetch (undici) through HTTPS_PROXY.
// Usage: node fetch.js METHOD URL [HEADER:VALUE ...]; prints {"status", "body"}.
// With FETCH=global it calls Node's own global fetch instead of undici's:
// the global dispatcher set here is what makes Node 20's use the proxy.
'use strict';
const undici = require('undici');

undici.setGlobalDispatcher(new undici.EnvHttpProxyAgent());
const fetch = process.env.FETCH === 'global' ? globalThis.fetch : undici.fetch;

async function main() {
  const [method, url, ...rawHeaders] = process.argv.slice(2);
  const headers = {};
  for (const h of rawHeaders) {
    const i = h.indexOf(':');
    headers[h.slice(0, i)] = h.slice(i + 1).trim();
  }
  const res = await fetch(url, { method, headers });
  const body = await res.text();
  process.stdout.write(JSON.stringify({ status: res.status, body }) + '\n');
}

main().catch((err) => {
  process.stderr.write(`fetch failed: ${err && err.cause ? err.cause : err}\n`);
  process.exit(2);
});
