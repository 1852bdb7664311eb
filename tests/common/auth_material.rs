//! Secrets made fresh by each test: NKeys, NATS JWTs (operator, accounts, users) and a small
//! certificate authority. Only `tests/nats_security.rs` includes this module, so the other test
//! binaries do not link `nkeys` and `rcgen`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use nkeys::KeyPair;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub fn seed_of(keys: &KeyPair) -> String {
    keys.seed().expect("a key pair made here has a seed")
}

/// A NATS JWT: base64url(header) "." base64url(claims) "." base64url(ed25519 signature of the
/// first two parts by the issuer's key).
pub fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let mut claims = json!({
        "iat": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    // A unique id for the token: a digest of its claims.
    let digest = Sha256::digest(claims.to_string().as_bytes());
    claims["jti"] = json!(URL_SAFE_NO_PAD.encode(digest));
    let header = json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = issuer.sign(signed.as_bytes()).expect("sign JWT");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The credentials file `nsc` writes for a user: its JWT, then its seed.
pub fn creds_file(user_jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )
}

/// A server in operator mode and the credentials of one user of its application account.
pub struct OperatorMode {
    /// `nats-server` configuration: trusted operator, system account, accounts preloaded in a
    /// memory resolver.
    pub config: String,
    /// The user's JWT and seed.
    pub creds: PathBuf,
    /// The same JWT with another user's seed: the signature of the server's challenge fails.
    pub creds_wrong_seed: PathBuf,
    pub user_seed: String,
}

pub fn operator_mode(dir: &Path) -> OperatorMode {
    let operator = KeyPair::new_operator();
    let system = KeyPair::new_account();
    let account = KeyPair::new_account();
    let user = KeyPair::new_user();
    let unlimited = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
    });
    let mut app_limits = unlimited.clone();
    // JetStream on for the application account (durable jobs need it).
    for key in ["mem_storage", "disk_storage", "streams", "consumer"] {
        app_limits[key] = json!(-1);
    }
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "test-operator",
        json!({"type": "operator", "version": 2, "system_account": system.public_key()}),
    );
    let account_claims = |limits: &Value| {
        json!({
            "limits": limits,
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2,
        })
    };
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        account_claims(&unlimited),
    );
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "APP",
        account_claims(&app_limits),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        "clip-worker",
        json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2,
        }),
    );
    let operator_file = dir.join("operator.jwt");
    std::fs::write(&operator_file, &operator_jwt).expect("write operator JWT");
    let user_seed = seed_of(&user);
    let creds = dir.join("user.creds");
    std::fs::write(&creds, creds_file(&user_jwt, &user_seed)).expect("write creds");
    let creds_wrong_seed = dir.join("wrong-seed.creds");
    let other = seed_of(&KeyPair::new_user());
    std::fs::write(&creds_wrong_seed, creds_file(&user_jwt, &other)).expect("write creds");
    let config = format!(
        "operator: \"{}\"\nsystem_account: {sys}\nresolver: MEMORY\n\
         resolver_preload: {{\n  {sys}: \"{system_jwt}\"\n  {acc}: \"{account_jwt}\"\n}}\n",
        operator_file.display(),
        sys = system.public_key(),
        acc = account.public_key(),
    );
    OperatorMode {
        config,
        creds,
        creds_wrong_seed,
        user_seed,
    }
}

/// PEM files of a test CA, a server certificate for 127.0.0.1 and a client certificate, all
/// signed by that CA, plus a second CA that signed none of them.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
    /// The client key's PEM text (must never show in logs).
    pub client_key_pem: String,
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = rcgen::KeyPair::generate().expect("CA key");
    CertifiedIssuer::self_signed(params, key).expect("self-signed CA")
}

/// A certificate for `names` with usage `purpose`, signed by `ca`: (certificate PEM, key PEM).
fn leaf(
    ca: &CertifiedIssuer<'static, rcgen::KeyPair>,
    common_name: &str,
    names: &[&str],
    purpose: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![purpose];
    let key = rcgen::KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, ca).expect("sign leaf");
    (cert.pem(), key.serialize_pem())
}

pub fn pki(dir: &Path) -> Pki {
    let ca = certificate_authority("clip-worker test CA");
    let other = certificate_authority("some other CA");
    let (server_cert, server_key) = leaf(
        &ca,
        "nats-server",
        &["127.0.0.1", "localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) =
        leaf(&ca, "clip-worker", &[], ExtendedKeyUsagePurpose::ClientAuth);
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path
    };
    Pki {
        ca: write("ca.pem", &ca.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server-key.pem", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client-key.pem", &client_key),
        other_ca: write("other-ca.pem", &other.pem()),
        client_key_pem: client_key,
    }
}

impl Pki {
    /// The server's `tls` block; `verify` asks every client for a certificate from the CA.
    pub fn server_tls(&self, verify: bool) -> String {
        format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: {verify}\n  timeout: 2\n}}\n",
            self.server_cert.display(),
            self.server_key.display(),
            self.ca.display(),
        )
    }
}
