"""Sign-in for `serve --http`: the server as an OAuth 2.1 resource server, per the MCP authorization spec.

    settings.py   the variables (issuer, public URL, audience, scopes), and what is half-set or contradictory
    discovery.py  the authorization server's metadata (RFC 8414 / OpenID discovery) and its signing keys (JWKS)
    tokens.py     checking an access token (PyJWT): signature, issuer, audience, expiry, not-before, scopes
    app.py        the HTTP side: resource metadata (RFC 9728), 401/403, the person of each request

The MCP SDK does the HTTP parts (`mcp.server.auth`); PyJWT (the `oauth` extra) does the JOSE parts. Who the person
is then travels as `people.current()`.
"""
