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
//   "scopes":    [ every scope name the server knows ],
//   "token_exchange": {            (optional: enables the RFC 8693 grant)
//     "trust_file": PATH,          JSON read on every exchange: { "<subject token iss>":
//                                  { "jwks": { "keys": [...] } } | { "jwks_uri": URL } }
//     "issued_token_type": URI     (optional: answer with this type whatever was asked)
//   }
// }
//
// Listens on 127.0.0.1 with a free port, over plain HTTP, and prints
// `listening on PORT` on stdout once it accepts requests. Tokens are opaque
// unless a resource says "jwt".
import { createPublicKey, verify } from 'node:crypto';
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
  // Only tokens issued by the token-exchange grant below carry extra claims.
  extraTokenClaims: async (_ctx, token) => token.exchangeClaims,
  enabledJWA: {
    clientAuthSigningAlgValues: ['RS256', 'ES256'],
  },
});
provider.proxy = false;

// RFC 8693 token exchange, as a registered custom grant: the subject token
// must be an ES256 JWT from a trusted issuer (its key found by `kid` in the
// issuer's JWKS, given inline or fetched from `jwks_uri` on every
// exchange), addressed to this server (`aud`), unexpired, with a `sub`. The
// issued token is an opaque access token whose introspection shows the
// subject and, when the subject token carried them, the task id and labels.
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';

function decodePart(part) {
  try {
    return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch {
    throw new errors.InvalidGrant('subject_token is not a JWT');
  }
}

async function verifySubjectToken(token) {
  const parts = token.split('.');
  if (parts.length !== 3) {
    throw new errors.InvalidGrant('subject_token is not a JWT');
  }
  const header = decodePart(parts[0]);
  const claims = decodePart(parts[1]);
  if (header.alg !== 'ES256') {
    throw new errors.InvalidGrant('subject_token must be signed with ES256');
  }
  const trusted = JSON.parse(readFileSync(config.token_exchange.trust_file, 'utf8'));
  const issuer = Object.hasOwn(trusted, claims.iss) ? trusted[claims.iss] : undefined;
  if (!issuer) {
    throw new errors.InvalidGrant('subject_token issuer is not trusted');
  }
  let { jwks } = issuer;
  if (!jwks) {
    const response = await fetch(issuer.jwks_uri, { signal: AbortSignal.timeout(5000) });
    if (!response.ok) {
      throw new errors.InvalidGrant(`the issuer's JWKS answered ${response.status}`);
    }
    jwks = await response.json();
  }
  const jwk = (jwks.keys ?? []).find((k) => k.kid === header.kid);
  if (!jwk) {
    throw new errors.InvalidGrant('subject_token key is not in the issuer JWKS');
  }
  const key = createPublicKey({
    key: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y },
    format: 'jwk',
  });
  const signed = Buffer.from(`${parts[0]}.${parts[1]}`);
  const signature = Buffer.from(parts[2], 'base64url');
  if (!verify('sha256', signed, { key, dsaEncoding: 'ieee-p1363' }, signature)) {
    throw new errors.InvalidGrant('subject_token signature is invalid');
  }
  const now = Math.floor(Date.now() / 1000);
  const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  // This server's issuer URL, with or without a trailing slash.
  const forUs = (a) => typeof a === 'string' && a.replace(/\/$/, '') === provider.issuer;
  if (!audiences.some(forUs)) {
    throw new errors.InvalidGrant('subject_token is not addressed to this server');
  }
  if (typeof claims.exp !== 'number' || claims.exp <= now) {
    throw new errors.InvalidGrant('subject_token is expired');
  }
  if (typeof claims.sub !== 'string' || claims.sub === '') {
    throw new errors.InvalidGrant('subject_token has no sub');
  }
  return claims;
}

async function tokenExchange(ctx) {
  const { params, client } = ctx.oidc;
  if (!params.subject_token) {
    throw new errors.InvalidRequest('missing subject_token');
  }
  if (params.subject_token_type !== JWT_TOKEN_TYPE) {
    throw new errors.InvalidRequest('only JWT subject tokens are supported');
  }
  const requested = params.requested_token_type || ACCESS_TOKEN_TYPE;
  const claims = await verifySubjectToken(params.subject_token);

  const allowed = new Set((client.scope ?? '').split(' ').filter(Boolean));
  let scopes = (params.scope ?? '').split(' ').filter(Boolean);
  for (const scope of scopes) {
    if (!allowed.has(scope)) {
      throw new errors.InvalidScope('requested scope is not allowed', scope);
    }
  }
  let audience = params.audience;
  if (params.resource) {
    const info = resources[params.resource];
    if (!info) {
      throw new errors.InvalidTarget(`unknown resource ${params.resource}`);
    }
    // Like oidc-provider's own grants: scopes the resource does not know are dropped.
    const known = new Set(info.scope.split(' '));
    scopes = scopes.filter((scope) => known.has(scope));
    audience = audience ?? params.resource;
  }

  const token = new provider.ClientCredentials({
    client,
    scope: scopes.join(' ') || undefined,
  });
  // Kept into the token by extraTokenClaims below, shown by introspection.
  token.exchangeClaims = {
    sub: claims.sub,
    exchanged_audience: audience,
    subject_issuer: claims.iss,
    ...(claims.task_id ? { task_id: claims.task_id } : {}),
    ...(claims.task_labels ? { task_labels: claims.task_labels } : {}),
    ...(claims.act ? { act: claims.act } : {}),
  };
  const value = await token.save();
  ctx.body = {
    access_token: value,
    issued_token_type: config.token_exchange.issued_token_type ?? requested,
    token_type: 'Bearer',
    expires_in: token.expiration,
    ...(token.scope ? { scope: token.scope } : {}),
  };
}

if (config.token_exchange) {
  provider.registerGrantType(
    TOKEN_EXCHANGE,
    tokenExchange,
    ['subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'scope', 'resource'],
  );
}

server.on('request', provider.callback());
process.stdout.write(`listening on ${port}\n`);

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => { server.close(); process.exit(0); });
}
