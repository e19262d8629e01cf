// An agent step with Node's fetch: list the open issues of a repository.
//
// Run it inside a task. credgate supplies the proxy, its CA and the GitHub
// credential, so this script holds no token and sends none:
//
//   npm install undici
//   credgate run --scope github-read -- node examples/agent.mjs
//
// `credgate run` sets HTTPS_PROXY (with the task's token), which undici's
// EnvHttpProxyAgent reads, and NODE_EXTRA_CA_CERTS, which Node reads at
// start-up to trust credgate's CA. It ends the task, revoking the
// credential, when the script exits, and exits with the script's code.
// (Node 24 and later can do without undici: `credgate run` also sets
// NODE_USE_ENV_PROXY=1, which makes the built-in fetch use the proxy.)
//
// GITHUB_API_URL and GITHUB_REPOSITORY choose the API and the repository
// (defaults: https://api.github.com and acme/app).

import { EnvHttpProxyAgent, fetch } from 'undici';

const api = process.env.GITHUB_API_URL ?? 'https://api.github.com';
const repo = process.env.GITHUB_REPOSITORY ?? 'acme/app';

const url = new URL(`${api}/repos/${repo}/issues`);
url.searchParams.set('state', 'open');
url.searchParams.set('per_page', '5');

const response = await fetch(url, {
  dispatcher: new EnvHttpProxyAgent(),
  headers: { accept: 'application/vnd.github+json' },
  signal: AbortSignal.timeout(30_000),
});
if (!response.ok) {
  // A denial by credgate is a 403 whose body says which rule is missing.
  console.error(`${response.status}: ${await response.text()}`);
  process.exit(1);
}
for (const issue of await response.json()) {
  console.log(`#${issue.number} ${issue.title}`);
}
