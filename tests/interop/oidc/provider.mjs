// An independent, OpenID-certified authorization server (the `oidc-provider` package) for
// tests/integration/outside_idp.rs: it signs JWT access tokens with keys it generates itself, so
// the registrar is tested against tokens that none of our code minted.
//
// Usage: node provider.mjs <port>   (0 picks a free port)
// Prints one JSON line on stdout once it listens: {"issuer":"http://127.0.0.1:<port>","port":<port>}
//
// - Client `sip-phone` / secret `phone-secret` (client_secret_post), `client_credentials` only.
// - Resource indicators (RFC 8707) choose the audience and the signing algorithm of the JWT access
//   token: urn:sip-registrar:rs256, urn:sip-registrar:es256, urn:sip-registrar:eddsa, and
//   urn:other-service (RS256, another audience). Tokens carry `preferred_username` = `alice`.
// - POST /test/rotate replaces every signing key with fresh ones (a new Provider instance on the
//   same issuer and port; tokens issued before stay signed with the old, now unpublished, keys).
// - Exits when stdin closes, so a test runner that dies takes the provider with it.
import { generateKeyPairSync } from 'node:crypto';
import http from 'node:http';
import process from 'node:process';

import Provider, { errors } from 'oidc-provider';

const RESOURCES = {
  'urn:sip-registrar:rs256': 'RS256',
  'urn:sip-registrar:es256': 'ES256',
  'urn:sip-registrar:eddsa': 'EdDSA',
  'urn:other-service': 'RS256',
};

// No `kid` here: the provider derives it (the RFC 7638 thumbprint), as it would in production.
function freshKeys() {
  const jwk = (type, options, alg) => ({
    ...generateKeyPairSync(type, options).privateKey.export({ format: 'jwk' }),
    alg,
    use: 'sig',
  });
  return [
    jwk('rsa', { modulusLength: 2048 }, 'RS256'),
    jwk('ec', { namedCurve: 'P-256' }, 'ES256'),
    jwk('ed25519', {}, 'EdDSA'),
  ];
}

function makeProvider(issuer) {
  return new Provider(issuer, {
    clients: [{
      client_id: 'sip-phone',
      client_secret: 'phone-secret',
      // Credentials in the form body: the test client then needs no base64 encoder.
      token_endpoint_auth_method: 'client_secret_post',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
    }],
    jwks: { keys: freshKeys() },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo(ctx, resource) {
          const alg = RESOURCES[resource];
          if (!alg) throw new errors.InvalidTarget();
          return {
            scope: 'sip',
            audience: resource,
            accessTokenTTL: 300,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg } },
          };
        },
      },
    },
    ttl: { ClientCredentials: 300 },
    extraTokenClaims: () => ({ preferred_username: 'alice' }),
  });
}

const server = http.createServer();
let handler = null;
server.on('request', (req, res) => {
  if (req.method === 'POST' && req.url === '/test/rotate') {
    handler = makeProvider(issuerOf(server)).callback();
    res.writeHead(204).end();
    return;
  }
  handler(req, res);
});

function issuerOf(srv) {
  return `http://127.0.0.1:${srv.address().port}`;
}

server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  handler = makeProvider(issuerOf(server)).callback();
  const { port } = server.address();
  process.stdout.write(`${JSON.stringify({ issuer: issuerOf(server), port })}\n`);
});

process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
