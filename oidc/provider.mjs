// A real OpenID provider on loopback for the sign-in tests: panva's oidc-provider, configured as a team's
// provider would be for an MCP server (dynamic client registration, authorization code + PKCE, resource
// indicators giving JWT access tokens whose audience is the MCP server's URL).
//
//   node provider.mjs CONFIG.json
//
// CONFIG: {"keys": [private JWK, ...], "scopes": ["images"]}. It listens on a free loopback port and prints one
// line, "ISSUER <url>", once it is ready. Its sign-in and consent pages are the library's development pages (any
// login name is accepted, and becomes the token's subject): the tests fill them in over HTTP.
//
// A test-only endpoint changes it as its operator would:
//   POST /test/keys      {"keys": [...]}: rotate the signing keys (the old ones are gone from the JWKS)
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const server = createServer();
await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
const issuer = `http://127.0.0.1:${server.address().port}`;

function provider(keys) {
  const made = new Provider(issuer, {
    jwks: { keys },
    cookies: { keys: ['flux-klein-mcp-tests-only'] },
    scopes: ['openid', 'offline_access', ...config.scopes],
    clientDefaults: { grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none' },
    features: {
      devInteractions: { enabled: true },
      registration: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // The resource the client asked for at the authorization endpoint also names the token's audience.
        defaultResource: async (ctx, client, oneOf) => oneOf,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (ctx, resource) => {
          if (!resource.startsWith('http://127.0.0.1:') && !resource.startsWith('http://localhost:')) {
            throw new Error('only loopback resources here');
          }
          return {
            scope: config.scopes.join(' '),
            audience: resource,
            accessTokenTTL: 300,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    findAccount: async (ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  });
  made.on('server_error', (ctx, err) => { process.stderr.write(`server_error: ${err.stack}\n`); });
  return made;
}

let current = provider(config.keys);

async function body(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

server.on('request', async (req, res) => {
  if (req.method === 'POST' && req.url === '/test/keys') {
    current = provider((await body(req)).keys);
    res.end('rotated');
  } else {
    current.callback()(req, res);
  }
});
process.stdout.write(`ISSUER ${issuer}\n`);
