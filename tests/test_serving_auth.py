"""JWT and API-key attacks against the real `Authenticator`, a JWKS served over HTTP, and `llmops token`."""

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conftest import run_llmops
from llmops_kit.core import AuthSettings, Settings
from llmops_kit.errors import AuthenticationError, ConfigurationError, PermissionDeniedError
from llmops_kit.serving.auth import (
    Authenticator,
    Principal,
    add_api_key,
    load_api_keys,
    mint_token,
    require_scope,
)

SECRET = "test-secret-" + "x" * 40
ISS, AUD = "llmops-kit", "llmops-kit"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, claims: dict, key: bytes | None) -> str:
    """A token signed by hand: HMAC-SHA256 with `key`, or unsigned when `key` is None."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    sig = b64url(hmac.new(key, signing_input.encode(), hashlib.sha256).digest()) if key is not None else ""
    return f"{signing_input}.{sig}"


def claims(**overrides) -> dict:
    now = int(time.time())
    base = {
        "iss": ISS,
        "aud": AUD,
        "sub": "alice",
        "tenant": "acme",
        "scope": "chat",
        "iat": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture(scope="module")
def rsa_setup(tmp_path_factory):
    """An RS256 deployment: private key (the identity provider's), a JWKS file, and the public key PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    folder = tmp_path_factory.mktemp("rsa")
    (folder / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "rsa1", "use": "sig"}]}))
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, folder / "jwks.json", pem, jwk


def rejected(auth: Authenticator, token: str | None, api_key: str | None = None) -> AuthenticationError:
    header = None if token is None else f"Bearer {token}"
    with pytest.raises(AuthenticationError) as info:
        auth.authenticate(header, api_key)
    return info.value


def assert_invalid_token(err: AuthenticationError, message_part: str):
    assert err.status == 401 and err.code == "invalid_token", (err.status, err.code, err.message)
    assert message_part in err.message
    assert err.headers["www-authenticate"].startswith(
        'Bearer realm="llmops", error="invalid_token", error_description="'
    )


@pytest.fixture
def hs_auth(tmp_path: Path) -> Authenticator:
    settings = Settings(root=tmp_path, auth=AuthSettings(api_keys_file="keys.jsonl"))
    return Authenticator.from_settings(settings, environ={"LLMOPS_JWT_SECRET": SECRET})


def test_valid_hs256_token_gives_the_principal(hs_auth):
    token = jwt.encode(claims(scope="chat embeddings"), SECRET, algorithm="HS256")
    assert hs_auth.authenticate(f"Bearer {token}") == Principal(
        "acme", "alice", frozenset({"chat", "embeddings"}), "jwt"
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: forge({"alg": "none", "typ": "JWT"}, claims(), None), "algorithm 'none' is not accepted"),
        (lambda: forge({"alg": "None", "typ": "JWT"}, claims(), None), "algorithm 'None' is not accepted"),
        (lambda: jwt.encode(claims(exp=int(time.time()) - 120), SECRET, algorithm="HS256"), "has expired"),
        (lambda: jwt.encode(claims(nbf=int(time.time()) + 300), SECRET, algorithm="HS256"), "not valid yet"),
        (lambda: jwt.encode(claims(aud="someone-else"), SECRET, algorithm="HS256"), "audience (aud)"),
        (lambda: jwt.encode(claims(iss="https://evil.example"), SECRET, algorithm="HS256"), "issuer (iss)"),
        (lambda: jwt.encode(claims(exp=None), SECRET, algorithm="HS256"), "lacks the required 'exp' claim"),
        (lambda: jwt.encode(claims(aud=None), SECRET, algorithm="HS256"), "lacks the required 'aud' claim"),
        (lambda: jwt.encode(claims(tenant=None), SECRET, algorithm="HS256"), "no 'tenant' claim"),
        (
            lambda: jwt.encode(claims(), "another-secret-" + "y" * 40, algorithm="HS256"),
            "signature does not verify",
        ),
        (lambda: jwt.encode(claims(), SECRET * 2, algorithm="HS512"), "algorithm 'HS512' is not accepted"),
        (lambda: "eyJhbGciOiJIUzI1NiJ9.e30", "not a well-formed JWT"),
        (lambda: "a.b.c", "not a well-formed JWT"),
    ],
)
def test_hs256_attacks_are_rejected_with_401(hs_auth, make, message):
    assert_invalid_token(rejected(hs_auth, make()), message)


def test_tampered_payload_is_rejected(hs_auth):
    header, body, sig = jwt.encode(claims(), SECRET, algorithm="HS256").split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    for change in ({"tenant": "victim"}, {"scope": "admin"}, {"exp": payload["exp"] + 10**6}):
        forged_body = b64url(json.dumps({**payload, **change}).encode())
        assert_invalid_token(rejected(hs_auth, f"{header}.{forged_body}.{sig}"), "signature does not verify")


def test_expired_token_is_not_served_from_the_cache(hs_auth):
    token = jwt.encode(claims(exp=int(time.time()) + 1), SECRET, algorithm="HS256")
    hs_auth.leeway_s = 0.0
    assert hs_auth.authenticate(f"Bearer {token}").tenant == "acme"
    time.sleep(2.1)
    assert_invalid_token(rejected(hs_auth, token), "has expired")


def test_missing_credentials_get_a_bare_challenge(hs_auth):
    for header in (None, "", "Basic YWxpY2U6cHc=", "Bearer", "Bearer   "):
        with pytest.raises(AuthenticationError) as info:
            hs_auth.authenticate(header)
        err = info.value
        assert (err.status, err.code, err.headers) == (
            401,
            "missing_credentials",
            {"www-authenticate": 'Bearer realm="llmops"'},
        )
        assert err.to_dict()["error"]["type"] == "authentication_error"


def test_missing_scope_is_403_insufficient_scope(hs_auth):
    principal = hs_auth.authenticate(
        "Bearer " + jwt.encode(claims(scope="embeddings"), SECRET, algorithm="HS256")
    )
    with pytest.raises(PermissionDeniedError) as info:
        require_scope(principal, "chat")
    err = info.value
    assert (err.status, err.code, err.to_dict()["error"]["type"]) == (
        403,
        "insufficient_scope",
        "permission_error",
    )
    assert err.headers["www-authenticate"].startswith('Bearer realm="llmops", error="insufficient_scope"')
    assert err.headers["www-authenticate"].endswith('scope="chat"')
    require_scope(
        hs_auth.authenticate("Bearer " + jwt.encode(claims(scope="admin"), SECRET, algorithm="HS256")), "chat"
    )


def test_rs256_setup_accepts_its_tokens_and_rejects_algorithm_confusion(tmp_path, rsa_setup):
    key, jwks_file, pem, jwk = rsa_setup
    settings = Settings(root=tmp_path, auth=AuthSettings(jwt_algorithms="RS256", jwks=str(jwks_file)))
    auth = Authenticator.from_settings(settings, environ={})
    good = jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "rsa1"})
    assert auth.authenticate(f"Bearer {good}").tenant == "acme"
    # HS256 signed with the server's own public key, in every form an attacker might try as the HMAC secret
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for secret in (pem, pem.strip(), der, json.dumps(jwk).encode()):
        token = forge({"alg": "HS256", "typ": "JWT", "kid": "rsa1"}, claims(), secret)
        assert_invalid_token(rejected(auth, token), "algorithm 'HS256' is not accepted")
    assert_invalid_token(
        rejected(auth, forge({"alg": "none"}, claims(), None)), "algorithm 'none' is not accepted"
    )
    assert_invalid_token(
        rejected(auth, jwt.encode(claims(exp=int(time.time()) - 100), key, algorithm="RS256")), "has expired"
    )
    assert_invalid_token(
        rejected(auth, jwt.encode(claims(aud="x"), key, algorithm="RS256", headers={"kid": "rsa1"})),
        "audience",
    )
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims(), other, algorithm="RS256", headers={"kid": "rsa1"})
    assert_invalid_token(rejected(auth, forged), "signature does not verify")


def test_confusion_fails_even_when_hs256_and_rs256_are_both_allowed(tmp_path, rsa_setup):
    """With both families pinned, an HS256 token is checked with the HS secret only, never with the RSA key."""
    key, jwks_file, pem, _ = rsa_setup
    settings = Settings(root=tmp_path, auth=AuthSettings(jwt_algorithms="RS256,HS256", jwks=str(jwks_file)))
    auth = Authenticator.from_settings(settings, environ={"LLMOPS_JWT_SECRET": SECRET})
    assert auth.authenticate("Bearer " + jwt.encode(claims(), key, algorithm="RS256")).tenant == "acme"
    assert auth.authenticate("Bearer " + jwt.encode(claims(), SECRET, algorithm="HS256")).tenant == "acme"
    token = forge({"alg": "HS256", "typ": "JWT"}, claims(), pem)
    assert_invalid_token(rejected(auth, token), "signature does not verify")
    # an RS256 header on an HMAC signature is checked with the RSA key, and fails
    token = forge({"alg": "RS256", "typ": "JWT"}, claims(), SECRET.encode())
    assert_invalid_token(rejected(auth, token), "signature does not verify")


def test_es256_token_with_an_rsa_only_jwks_is_rejected(tmp_path, rsa_setup):
    _, jwks_file, _, _ = rsa_setup
    settings = Settings(root=tmp_path, auth=AuthSettings(jwt_algorithms="RS256,ES256", jwks=str(jwks_file)))
    auth = Authenticator.from_settings(settings, environ={})
    token = jwt.encode(
        claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": "rsa1"}
    )
    assert_invalid_token(rejected(auth, token), "no ES256 key with kid 'rsa1'")


class _JwksHandler(BaseHTTPRequestHandler):
    document: dict = {"keys": []}
    hits = 0

    def do_GET(self):  # noqa: N802 (http.server API)
        type(self).hits += 1
        body = json.dumps(self.document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_jwks_url_is_fetched_once_and_refreshed_for_a_new_kid(tmp_path):
    first, second = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))

    def jwk(k, kid):
        return {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(k.public_key())), "kid": kid}

    _JwksHandler.document, _JwksHandler.hits = {"keys": [jwk(first, "k1")]}, 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JwksHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json"
        auth = Authenticator.from_settings(
            Settings(root=tmp_path, auth=AuthSettings(jwt_algorithms="ES256", jwks=url)), environ={}
        )
        for _ in range(20):
            token = jwt.encode(
                claims(jti=str(time.time_ns())), first, algorithm="ES256", headers={"kid": "k1"}
            )
            assert auth.authenticate(f"Bearer {token}").tenant == "acme"
        assert _JwksHandler.hits == 1, "keys are fetched at start-up, not per request"
        # the provider rotates in a new key: the first token naming it triggers one refresh
        _JwksHandler.document = {"keys": [jwk(first, "k1"), jwk(second, "k2")]}
        auth._jwks_fetched -= 120
        token = jwt.encode(claims(), second, algorithm="ES256", headers={"kid": "k2"})
        assert auth.authenticate(f"Bearer {token}").tenant == "acme"
        assert _JwksHandler.hits == 2
        unknown = jwt.encode(claims(), second, algorithm="ES256", headers={"kid": "k3"})
        assert_invalid_token(rejected(auth, unknown), "no ES256 key with kid 'k3'")
        assert _JwksHandler.hits == 2, "refreshes are rate-limited"
    finally:
        server.shutdown()


def test_settings_that_could_never_authenticate_refuse_to_start(tmp_path):
    with pytest.raises(ConfigurationError, match="nothing can verify a credential"):
        Authenticator.from_settings(Settings(root=tmp_path), environ={})
    with pytest.raises(ConfigurationError, match="must not include 'none'"):
        Authenticator.from_settings(Settings(auth=AuthSettings(jwt_algorithms="none")), environ={})
    with pytest.raises(ConfigurationError, match="cannot read a JWKS"):
        Authenticator.from_settings(
            Settings(root=tmp_path, auth=AuthSettings(jwt_algorithms="RS256", jwks="missing.json")),
            environ={},
        )


def test_api_keys_unknown_wrong_and_revoked(tmp_path, hs_auth):
    keys = tmp_path / "keys.jsonl"
    key = add_api_key(keys, "acme", ["embeddings"])
    hs_auth._keys_checked -= 10  # the file changed: let the authenticator notice now
    assert hs_auth.authenticate(None, key) == Principal(
        "acme", f"apikey:{key.split('_')[1]}", frozenset({"embeddings"}), "api_key"
    )
    assert hs_auth.authenticate(f"Bearer {key}").tenant == "acme"
    for bad in (
        "llmops_00000000_" + "A" * 43,
        key[:-1] + ("A" if key[-1] != "A" else "B"),
        "sk-not-ours",
        "llmops_",
    ):
        err = rejected(hs_auth, None, api_key=bad)
        assert (err.status, err.message) == (401, "the API key is not valid")
        assert 'error="invalid_token"' in err.headers["www-authenticate"]
    assert key not in keys.read_text() and hashlib.sha256(key.encode()).hexdigest() in keys.read_text()
    proc = run_llmops("token", "revoke-key", "--file", str(keys), key.split("_")[1])
    assert proc.returncode == 0, proc.stderr
    hs_auth._keys_checked -= 10
    assert rejected(hs_auth, None, api_key=key).message == "the API key is not valid"


def test_token_cli_mints_a_token_the_server_accepts(tmp_path):
    (tmp_path / "settings.ini").write_text("[auth]\nissuer = me\naudience = you\n")
    env = {"LLMOPS_JWT_SECRET": SECRET}
    proc = run_llmops(
        "token",
        "create",
        "--tenant",
        "t1",
        "--scopes",
        "chat,embeddings",
        "--ttl",
        "60",
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip()
    settings = Settings(root=tmp_path, auth=AuthSettings(issuer="me", audience="you"))
    principal = Authenticator.from_settings(settings, environ=env).authenticate(f"Bearer {token}")
    assert (principal.tenant, principal.scopes) == ("t1", frozenset({"chat", "embeddings"}))
    claims_ = jwt.decode(token, options={"verify_signature": False})
    assert claims_["exp"] - claims_["iat"] == 60 and claims_["iss"] == "me" and claims_["aud"] == "you"
    assert mint_token(settings, "t2", ["metrics"], 5, environ=env).count(".") == 2


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("create", "--tenant", "t"), {}, "LLMOPS_JWT_SECRET is not set"),
        (
            ("create", "--tenant", "t", "--scopes", "chat,root"),
            {"LLMOPS_JWT_SECRET": SECRET},
            "unknown scope(s) root",
        ),
        (
            ("create", "--tenant", "t", "--ttl", "0"),
            {"LLMOPS_JWT_SECRET": SECRET},
            "the ttl must be positive",
        ),
        (("create", "--tenant", "t"), {"LLMOPS_JWT_SECRET": "short"}, "must be at least 32 bytes"),
        (("add-key", "--tenant", "t"), {}, "no key file: pass --file PATH"),
        (("revoke-key", "--file", "k.jsonl", "deadbeef"), {}, "no API key with id 'deadbeef'"),
    ],
)
def test_token_cli_errors_are_one_line(tmp_path, args, env, message):
    proc = run_llmops("token", *args, cwd=tmp_path, env=env)
    assert proc.returncode == 2
    assert proc.stderr.startswith("llmops: error: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_add_key_cli_prints_the_key_once_and_stores_only_its_hash(tmp_path):
    keys = tmp_path / "keys.jsonl"
    proc = run_llmops("token", "add-key", "--tenant", "acme", "--scopes", "chat,metrics", "--file", str(keys))
    assert proc.returncode == 0, proc.stderr
    key = proc.stdout.strip()
    assert key.startswith("llmops_") and "cannot be shown again" in proc.stderr
    entry = next(iter(load_api_keys(keys).values()))
    assert (entry.tenant, entry.scopes) == ("acme", ("chat", "metrics")) and key not in keys.read_text()
    listing = run_llmops("token", "list-keys", "--file", str(keys))
    assert listing.returncode == 0 and entry.id in listing.stdout and key not in listing.stdout


# Through HTTP: the same attacks against a running `llmops serve` (RS256 via JWKS, HS256, API keys together).


@pytest.fixture(scope="module")
def http_server(tmp_path_factory, rsa_setup):
    pytest.importorskip(
        "llmops_kit.guardrails.chain", reason="the server needs llmops_kit.guardrails.chain, not built yet"
    )
    from test_serving_app_support import SECRET as SERVER_SECRET
    from test_serving_app_support import start_server

    key, jwks_file, _, _ = rsa_setup
    root = tmp_path_factory.mktemp("auth-http")
    (root / "jwks.json").write_text(jwks_file.read_text())
    api_key = add_api_key(root / "keys.jsonl", "keyed", ["chat"])
    extra = "[auth]\njwt_algorithms = RS256,HS256\njwks = jwks.json\napi_keys_file = keys.jsonl\n"
    srv = start_server(root, extra_ini=extra)
    srv.rsa_key, srv.api_key, srv.secret = key, api_key, SERVER_SECRET
    yield srv
    srv.stop()


def http_attacks(srv) -> dict[str, tuple[dict, int, str]]:
    """name -> (headers, expected status, expected error code)."""
    key, pem = (
        srv.rsa_key,
        srv.rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    header, body, sig = jwt.encode(claims(), key, algorithm="RS256").split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    tampered = f"{header}.{b64url(json.dumps({**payload, 'tenant': 'victim'}).encode())}.{sig}"

    def bearer(token):
        return {"Authorization": f"Bearer {token}"}

    now = int(time.time())
    return {
        "no credentials": ({}, 401, "missing_credentials"),
        "alg none": (bearer(forge({"alg": "none", "typ": "JWT"}, claims(), None)), 401, "invalid_token"),
        "hs256 with the rsa public key": (
            bearer(forge({"alg": "HS256"}, claims(), pem)),
            401,
            "invalid_token",
        ),
        "expired": (bearer(jwt.encode(claims(exp=now - 300), key, algorithm="RS256")), 401, "invalid_token"),
        "not yet valid": (
            bearer(jwt.encode(claims(nbf=now + 300), key, algorithm="RS256")),
            401,
            "invalid_token",
        ),
        "wrong audience": (
            bearer(jwt.encode(claims(aud="other"), key, algorithm="RS256")),
            401,
            "invalid_token",
        ),
        "wrong issuer": (
            bearer(jwt.encode(claims(iss="evil"), key, algorithm="RS256")),
            401,
            "invalid_token",
        ),
        "tampered payload": (bearer(tampered), 401, "invalid_token"),
        "unknown api key": ({"x-api-key": "llmops_00000000_" + "A" * 43}, 401, "invalid_token"),
        "header injection via alg": (
            bearer(forge({"alg": "HS256\r\nX-Evil: 1€"}, claims(), b"k")),
            401,
            "invalid_token",
        ),
        "header injection via kid": (
            bearer(forge({"alg": "RS256", "kid": "k\r\nX-Evil: 1€"}, claims(), b"k")),
            401,
            "invalid_token",
        ),
        "missing scope": (
            bearer(jwt.encode(claims(scope="embeddings"), key, algorithm="RS256")),
            403,
            "insufficient_scope",
        ),
    }


def test_jwt_attacks_over_http_get_the_right_status_header_and_record(http_server):
    from test_serving_app_support import chat_body

    attacks = http_attacks(http_server)
    ids = {}
    with http_server.client() as client:
        for name, (headers, status, code) in attacks.items():
            r = client.post("/v1/chat/completions", headers=headers, json=chat_body())
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), (name, r.text)
            if status == 401:
                challenge = r.headers["www-authenticate"]
                assert challenge.startswith('Bearer realm="llmops"'), (name, challenge)
                assert (f'error="{code}"' in challenge) == (code != "missing_credentials"), (name, challenge)
                assert "x-evil" not in r.headers, name
            ids[r.headers["x-request-id"]] = (name, status)
        good = {
            "rs256": {
                "Authorization": "Bearer " + jwt.encode(claims(), http_server.rsa_key, algorithm="RS256")
            },
            "hs256": {
                "Authorization": "Bearer " + jwt.encode(claims(), http_server.secret, algorithm="HS256")
            },
            "api key": {"x-api-key": http_server.api_key},
            "api key as bearer": {"Authorization": f"Bearer {http_server.api_key}"},
        }
        for name, headers in good.items():
            r = client.post("/v1/chat/completions", headers=headers, json=chat_body())
            assert r.status_code == 200, (name, r.text)
    records = http_server.wait_records(ids)
    for request_id, (name, status) in ids.items():
        (record,) = records[request_id]
        assert (record["status"], record["outcome"]) == (
            status,
            "auth_error" if status == 401 else "forbidden",
        ), name
    log_text = "".join(p.read_text() for p in http_server.audit_dir.glob("*.jsonl"))
    for headers, _, _ in attacks.values():
        for value in headers.values():
            assert value.split()[-1] not in log_text, "credentials never reach the audit log"
    assert http_server.api_key not in log_text


def test_mangled_tokens_only_ever_raise_auth_errors(hs_auth, rsa_setup):
    """Random corruptions of valid tokens (both families) are 401s, never another exception (a 500)."""
    import random

    key, jwks_file, _, _ = rsa_setup
    rs_auth = Authenticator(algorithms=["RS256", "HS256"], secret=SECRET, issuer=ISS, audience=AUD)
    rs_auth.public_keys = Authenticator.from_settings(
        Settings(auth=AuthSettings(jwt_algorithms="RS256", jwks=str(jwks_file))), environ={}
    ).public_keys
    rng = random.Random(7)
    alphabet = "ABCxyz0189-_.=+/ \x00é"
    for auth, token in (
        (hs_auth, jwt.encode(claims(), SECRET, algorithm="HS256")),
        (rs_auth, jwt.encode(claims(), key, algorithm="RS256")),
    ):
        for _ in range(1500):
            chars = list(token)
            for _ in range(rng.randint(1, 4)):
                op, i = rng.random(), rng.randrange(len(chars))
                if op < 0.4:
                    chars[i] = rng.choice(alphabet)
                elif op < 0.7:
                    chars.insert(i, rng.choice(alphabet))
                else:
                    del chars[i]
            mangled = "".join(chars)
            try:
                auth.authenticate(f"Bearer {mangled}")
            except AuthenticationError as e:
                assert e.status == 401
