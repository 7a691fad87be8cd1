"""Tokens of an external OIDC issuer (IAM, CILogon...): verified against its JWKS,
served here by a real HTTP server on loopback, and mapped to a role by a claim."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from dawms.catalog.db import Database
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler.config import SchedulerConfig
from dawms.server.app import create_app
from dawms.server.settings import OIDCIssuer, ServerSettings

pytestmark = pytest.mark.auth
ISSUER = "https://iam.example.org/"


class JWKS:
    """An issuer's keys, published at http://127.0.0.1:<port>/jwk."""

    def __init__(self) -> None:
        self.keys = {"k1": rsa.generate_private_key(public_exponent=65537, key_size=2048)}
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                owner.hits += 1
                if self.path != "/jwk":
                    self.send_error(404)
                    return
                body = json.dumps({"keys": [
                    {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key())),
                     "kid": kid, "use": "sig", "alg": "RS256"}
                    for kid, k in owner.keys.items()]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwk"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def token(self, kid: str = "k1", key: rsa.RSAPrivateKey | None = None, **claims: object
              ) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": "dawms-prod", "sub": "0123-abcd", "iat": now,
                "exp": now + 600, "jti": "oidc-1", "preferred_username": "jdoe",
                "groups": ["/atlas", "/atlas/production"], **claims}
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, key or self.keys[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def issuer() -> Iterator[JWKS]:
    jwks = JWKS()
    yield jwks
    jwks.httpd.shutdown()
    jwks.httpd.server_close()


@pytest.fixture
def api(db: Database, issuer: JWKS) -> Iterator[TestClient]:
    cfg = OIDCIssuer(issuer=ISSUER, jwks_url=issuer.url, audience="dawms-prod",
                     subject_claim="preferred_username", role_claim="groups",
                     roles={"/atlas/production": "production", "/atlas": "analyst",
                            "/atlas/pilots": "pilot"}, queues_claim="dawms_queues",
                     jwks_refresh_cooldown_s=0)
    app = create_app(db, LocalDDM(), SchedulerConfig(),
                     settings=ServerSettings(oidc_issuers=[cfg], key_cache_s=0))
    with TestClient(app) as client:
        yield client


def _who(api: TestClient, token: str) -> tuple[int, str]:
    reply = api.post("/api/v1/task/kill", json={"task_id": 1},
                     headers={"Authorization": f"Bearer {token}"})
    return reply.status_code, reply.json()["message"]


def test_an_issuers_token_maps_to_its_role(api: TestClient, issuer: JWKS) -> None:
    # production: allowed to manage, so the call gets as far as "no task 1"
    assert _who(api, issuer.token()) == (404, "no task 1")
    assert issuer.hits >= 1
    # the first matching entry of the mapping wins: /atlas alone is an analyst
    status, _ = _who(api, issuer.token(groups=["/atlas"]))
    assert status == 404  # analysts may manage (their own) tasks: the task is just missing
    reply = api.get("/api/v1/factory/demand", params={"queue": "Q"},
                    headers={"Authorization": f"Bearer {issuer.token(groups=['/atlas'])}"})
    assert reply.status_code == 403 and "role analyst" in reply.json()["message"]


def test_the_subject_comes_from_the_configured_claim(api: TestClient, issuer: JWKS,
                                                     db: Database, ddm: LocalDDM,
                                                     sites: list[str], tmp_path) -> None:
    from factories import make_dataset

    make_dataset(db, ddm, "o:raw", "SITE_A_DISK", 1, tmp_path)
    headers = {"Authorization": f"Bearer {issuer.token(groups=['/atlas'])}"}
    reply = api.post("/api/v1/task/submit", headers=headers, json={
        "name": "o", "transformation": "true {inputs}", "input_datasets": ["o:raw"],
        "output_dataset": "o:out.{task_id}"})
    assert reply.status_code == 200, reply.text
    task = api.get(f"/api/v1/task/{reply.json()['data']['task_id']}", headers=headers)
    assert task.json()["data"]["owner"] == "jdoe"


@pytest.mark.parametrize("claims, message", [
    ({"aud": "another-service"}, "token audience is not accepted here"),
    ({"exp": int(time.time()) - 600}, "token expired"),
    ({"groups": ["/cms"]}, "grants no role here"),
    ({"groups": None}, "grants no role here"),
    ({"preferred_username": None}, "'preferred_username' claim is missing"),
    ({"groups": ["/atlas/pilots"]}, "a pilot token must name its queues"),
])
def test_bad_issuer_tokens_are_refused(api: TestClient, issuer: JWKS, claims: dict,
                                       message: str) -> None:
    status, text = _who(api, issuer.token(**claims))
    assert status == 401 and message in text


def test_a_key_the_issuer_does_not_publish_is_refused(api: TestClient, issuer: JWKS) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    status, text = _who(api, issuer.token(kid="k1", key=other))
    assert status == 401 and text == "token signature does not verify"
    status, text = _who(api, issuer.token(kid="k9", key=other))
    assert status == 401 and "does not publish" in text
    # the issuer rotates in k2: it is fetched and accepted
    issuer.keys["k2"] = other
    assert _who(api, issuer.token(kid="k2")) == (404, "no task 1")


def test_pilot_tokens_of_an_issuer_are_bound_by_its_queue_claim(api: TestClient,
                                                                issuer: JWKS) -> None:
    token = issuer.token(groups=["/atlas/pilots"], dawms_queues=["SITE_A_PROD"])
    reply = api.post("/api/v1/pilot/acquire_jobs", json={"queue": "SITE_B_PROD",
                                                         "pilot_id": "x"},
                     headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 403 and "not bound to queue" in reply.json()["message"]


def test_an_unreachable_jwks_is_a_401_not_a_500(db: Database, issuer: JWKS) -> None:
    cfg = OIDCIssuer(issuer=ISSUER, jwks_url="http://127.0.0.1:9/jwk", audience="dawms-prod",
                     roles={"/atlas": "analyst"})
    app = create_app(db, LocalDDM(), SchedulerConfig(),
                     settings=ServerSettings(oidc_issuers=[cfg]))
    with TestClient(app) as api:
        status, text = _who(api, issuer.token())
    assert status == 401 and "cannot be fetched" in text
