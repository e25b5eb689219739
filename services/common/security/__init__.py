"""Security: who is calling (bearer tokens), what they may do, TLS, and the start-up policy
that refuses an insecure process off loopback.

- `auth_settings`: the PAYSAGA_AUTH_* settings;
- `identity`: the verified `Caller` of the call being served (`current_caller()`);
- `tokens`: JWT verification, and signing development tokens;
- `interceptor`: the gRPC server interceptor that authenticates every call;
- `authz`: what the caller may do (`require_user`, `may_see`, `PermissionDenied`);
- `devtokens`: the `token` command (`python -m services.common.security.devtokens`);
- `tls`: certificates and channel credentials; `policy`: the start-up policy.

Inside: identity and auth_settings import nothing here; tokens and authz import identity;
the interceptor imports them all. May import serving (to answer with gRPC errors) and the
leaves of services.common.
"""
