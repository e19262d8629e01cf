// A real OAuth 2.0 authorization server for credgate's tests: panva's
// oidc-provider with the client credentials grant, resource indicators
// (RFC 8707), revocation (RFC 7009) and introspection (RFC 7662).
//
// Usage: node server.js CONFIG.json
//
// CONFIG.json: {
//   "clients":   [ oidc-provider client metadata, e.g. { client_id, client_secret,
//                  token_endpoint_auth_method, grant_types: ["client_credentials"], scope, jwks } ],
//   "resources": { "<resource indicator>": { "scope": "a b", "format": "opaque" | "jwt" } },
//   "scopes":    [ every scope name the server knows ]
// }
//
// Listens on 127.0.0.1 with a free port, over plain HTTP, and prints
// `listening on PORT` on stdout once it accepts requests. Tokens are opaque
// unless a resource says "jwt".
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const resources = config.resources ?? {};

const server = createServer();
await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: config.clients,
  scopes: config.scopes ?? [],
  // Tokens stay short: the tests check credgate's TTL handling against them.
  ttl: { ClientCredentials: 600 },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf,
      useGrantedResource: async () => false,
      getResourceServerInfo: async (_ctx, resourceIndicator) => {
        const info = resources[resourceIndicator];
        if (!info) {
          throw new errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
        }
        return {
          scope: info.scope,
          audience: resourceIndicator,
          accessTokenFormat: info.format ?? 'opaque',
        };
      },
    },
  },
  // The defaults of oidc-provider apply to revocation and introspection:
  // only the client that obtained a token may revoke it, and any
  // authenticated client may introspect it.
  enabledJWA: {
    clientAuthSigningAlgValues: ['RS256', 'ES256'],
  },
});
provider.proxy = false;

server.on('request', provider.callback());
process.stdout.write(`listening on ${port}\n`);

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => { server.close(); process.exit(0); });
}
