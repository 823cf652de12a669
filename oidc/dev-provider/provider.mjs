// A development OpenID Provider for mlflow-stack (oidc-provider 9): never for production.
//
//   node provider.mjs CONFIG_JSON_PATH
//
// Everything comes from one JSON file (mode 0600, written by mlflow_stack/oidc_dev.py): the
// issuer, the bind address, the signing keys, the clients, the users and their passwords.
// Secrets are never taken from the command line or the environment, and never logged.
// Storage is oidc-provider's in-memory adapter: a restart forgets sessions and grants.
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';

import Provider, { errors } from 'oidc-provider';

const configPath = process.argv[2];
if (!configPath) {
  console.error('usage: node provider.mjs CONFIG_JSON_PATH');
  process.exit(2);
}
// The file holds client secrets and passwords: refuse one that others can read.
if ((statSync(configPath).mode & 0o077) !== 0) {
  console.error(`refusing ${configPath}: it must be readable by its owner only (chmod 600)`);
  process.exit(2);
}
const config = JSON.parse(readFileSync(configPath, 'utf8'));

const api = config.api;
const users = new Map(config.users.map((user) => [user.username, user]));
const serviceClients = new Map(config.service_clients.map((client) => [client.client_id, client]));

// Passwords are compared as digests in constant time; an unknown user costs the same.
const digest = (text) => createHash('sha256').update(String(text), 'utf8').digest();
function checkPassword(username, password) {
  const user = users.get(username);
  const expected = digest(user ? user.password : '\u0000no such user');
  return timingSafeEqual(expected, digest(password)) && user !== undefined;
}

// The claims every token about a person carries: access tokens (for the API) and the ID
// token and userinfo (filtered there by the granted scopes, see `claims` below).
function personClaims(user) {
  return {
    preferred_username: user.username,
    groups: user.groups ?? [],
    ...(user.email ? { email: user.email, email_verified: true } : {}),
    ...(user.name ? { name: user.name } : {}),
  };
}

const browser = config.browser_client;
const clients = [
  {
    client_id: browser.client_id,
    client_secret: browser.client_secret,
    redirect_uris: browser.redirect_uris,
    post_logout_redirect_uris: browser.post_logout_redirect_uris ?? [],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: browser.token_endpoint_auth_method ?? 'client_secret_basic',
  },
  ...config.service_clients.map((client) => ({
    client_id: client.client_id,
    client_secret: client.client_secret,
    redirect_uris: [],
    grant_types: ['client_credentials'],
    response_types: [],
    token_endpoint_auth_method: client.token_endpoint_auth_method ?? 'client_secret_basic',
  })),
];

const accessTokenTTL = api.access_token_ttl ?? 300;
const idTokenTTL = config.id_token_ttl ?? accessTokenTTL;
const sessionTTL = config.session_ttl ?? 8 * 3600;

const provider = new Provider(config.issuer, {
  clients,
  jwks: config.jwks,
  cookies: { keys: config.cookie_keys },
  async findAccount(ctx, sub) {
    const user = users.get(sub);
    if (!user) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, ...personClaims(user) };
      },
    };
  },
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    // groups come with profile too, as Keycloak's group mapper adds them to every token: the
    // profile's oidc_scopes ask for openid, profile and email only.
    profile: ['preferred_username', 'name', 'groups'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  // Without this, oidc-provider puts scope-requested claims (groups, preferred_username) only
  // in userinfo whenever an access token is issued too; the relying party reads the ID token.
  conformIdTokenClaims: false,
  responseTypes: ['code'], // authorization code flow only: no implicit, no hybrid
  pkce: { required: () => true }, // S256 is the only method oidc-provider 9 implements
  features: {
    devInteractions: { enabled: false }, // its login form accepts any name, no password check
    clientCredentials: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    introspection: { enabled: false },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Every token request is for the API unless a client names another resource (refused):
      // access tokens are then JWTs (typ at+jwt) with aud = the API audience.
      defaultResource: (ctx, client, oneOf) => oneOf ?? api.audience,
      useGrantedResource: () => true,
      getResourceServerInfo(ctx, resourceIndicator) {
        if (resourceIndicator !== api.audience) throw new errors.InvalidTarget();
        return {
          scope: api.scope ?? 'mlflow',
          audience: api.audience,
          accessTokenFormat: 'jwt',
          accessTokenTTL,
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  // Who the access token is for, in the claims the API reads (username and groups).
  extraTokenClaims(ctx, token) {
    if (token.kind === 'ClientCredentials') {
      const client = serviceClients.get(token.clientId);
      return { preferred_username: client.username ?? client.client_id, groups: client.groups ?? [] };
    }
    const user = users.get(token.accountId);
    return user ? { preferred_username: user.username, groups: user.groups ?? [] } : undefined;
  },
  ttl: {
    AccessToken: accessTokenTTL,
    ClientCredentials: accessTokenTTL,
    IdToken: idTokenTTL,
    AuthorizationCode: 60,
    Interaction: 600,
    Session: sessionTTL,
    Grant: sessionTTL,
  },
  clientBasedCORS: () => false,
  renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', Object.entries(out)
      .map(([key, value]) => `<p><b>${escape(key)}</b>: ${escape(value)}</p>`).join(''));
  },
});

// --- login and consent ----------------------------------------------------------------------
// The relying parties are ours, so consent is granted without asking (like Keycloak's
// "consent required: off"); login is a plain username + password form.

const escape = (value) => String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!DOCTYPE html><html><head><meta charset="utf-8">
<title>${escape(title)}</title></head><body><h1>${escape(title)}</h1>${body}</body></html>`;

function loginPage(uid, message = '') {
  return page('Sign-in', `${message ? `<p role="alert">${escape(message)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}" autocomplete="off">
  <input type="hidden" name="prompt" value="login">
  <label>Username <input required name="login" autofocus></label>
  <label>Password <input required type="password" name="password"></label>
  <button type="submit">Sign in</button>
</form>`);
}

async function readForm(req, limit = 16 * 1024) {
  let size = 0;
  const chunks = [];
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new errors.InvalidRequest('request body too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function grantConsent(details) {
  const { prompt: { details: missing }, grantId, session, params } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return { consent: { grantId: await grant.save() } };
}

const interactionPath = /^\/interaction\/([\w-]+)$/;

provider.use(async (ctx, next) => {
  const match = interactionPath.exec(ctx.path);
  if (!match) return next();
  ctx.set('Cache-Control', 'no-store');
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (details.uid !== match[1]) throw new errors.SessionNotFound('interaction mismatch');
  const finish = async (result, merge) => {
    ctx.status = 303;
    ctx.redirect(await provider.interactionResult(ctx.req, ctx.res, result, {
      mergeWithLastSubmission: merge,
    }));
  };

  if (details.prompt.name === 'consent') return finish(await grantConsent(details), true);
  if (details.prompt.name !== 'login') ctx.throw(501, `prompt ${details.prompt.name} not supported`);
  if (ctx.method === 'GET') {
    ctx.type = 'html';
    ctx.body = loginPage(details.uid);
    return undefined;
  }
  if (ctx.method !== 'POST') ctx.throw(405);
  const form = await readForm(ctx.req);
  const username = form.get('login') ?? '';
  if (!checkPassword(username, form.get('password') ?? '')) {
    ctx.status = 401;
    ctx.type = 'html';
    ctx.body = loginPage(details.uid, 'Invalid username or password.');
    return undefined;
  }
  return finish({ login: { accountId: username } }, false);
});

provider.on('server_error', (ctx, error) => console.error('server_error', error));

const server = provider.listen(config.port, config.host ?? '127.0.0.1', () => {
  console.log(`dev OpenID Provider ${config.issuer} listening on ${config.host ?? '127.0.0.1'}:${config.port}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref(); // a client holding a connection open
  });
}
