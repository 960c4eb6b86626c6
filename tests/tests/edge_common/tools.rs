//! Tools: the nginx and openssl binaries, the repository's scripts, and TLS
//! certificates made with the openssl CLI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use chat_tests::procs;

pub const NGINX: &str = "/usr/sbin/nginx";

/// The nginx binary; fails loudly when it is missing.
pub fn nginx_bin() -> PathBuf {
    let p = PathBuf::from(NGINX);
    assert!(
        p.is_file(),
        "{NGINX} is missing: the edge tests need the real nginx. Run tests/run \
         (it installs nginx and openssl), or apt-get install nginx openssl"
    );
    p
}

/// The openssl CLI; fails loudly when it is missing.
pub fn openssl_bin() -> PathBuf {
    for p in ["/usr/bin/openssl", "/usr/local/bin/openssl"] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "the openssl CLI is missing: the edge tests need it to make certificates. Run tests/run \
         (it installs nginx and openssl), or apt-get install openssl"
    );
}

/// The repository's root (the parent of the `tests` crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate has a parent")
        .to_path_buf()
}

/// `nginx/render`.
pub fn render_script() -> PathBuf {
    let p = repo_root().join("nginx").join("render");
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

/// Runs a command to completion (at most 30 s), capturing its output.
pub fn run(cmd: &mut Command) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            procs::sigkill(pid);
            panic!("{what} did not finish within 30 s");
        }
    }
}

/// Runs a command that must succeed.
#[track_caller]
pub fn run_ok(cmd: &mut Command) -> Output {
    let what = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A private CA and a server certificate for 127.0.0.1 and localhost.
pub struct Certs {
    pub dir: tempfile::TempDir,
    pub ca_pem: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certs {
    pub fn make() -> Certs {
        let openssl = openssl_bin();
        let dir = tempfile::Builder::new()
            .prefix("chat-edge-certs-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("ca.cnf"),
            "[req]\nprompt = no\ndistinguished_name = dn\nx509_extensions = v3_ca\n\
             [dn]\nCN = chat-tests CA\n\
             [v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\n",
        )
        .unwrap();
        std::fs::write(
            d.join("leaf.cnf"),
            "[req]\nprompt = no\ndistinguished_name = dn\n[dn]\nCN = 127.0.0.1\n",
        )
        .unwrap();
        std::fs::write(
            d.join("leaf.ext"),
            "[v3]\nbasicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage = serverAuth\n\
             subjectAltName = IP:127.0.0.1,DNS:localhost\n\
             authorityKeyIdentifier = keyid\nsubjectKeyIdentifier = hash\n",
        )
        .unwrap();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        run_ok(
            Command::new(&openssl)
                .current_dir(d)
                .args(["req", "-x509", "-config", "ca.cnf", "-nodes", "-days", "2"])
                .args(ec)
                .args(["-keyout", "ca.key", "-out", "ca.pem"]),
        );
        run_ok(
            Command::new(&openssl)
                .current_dir(d)
                .args(["req", "-new", "-config", "leaf.cnf", "-nodes"])
                .args(ec)
                .args(["-keyout", "server.key", "-out", "server.csr"]),
        );
        run_ok(Command::new(&openssl).current_dir(d).args([
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-extensions",
            "v3",
            "-out",
            "server.pem",
        ]));
        Certs {
            ca_pem: d.join("ca.pem"),
            cert: d.join("server.pem"),
            key: d.join("server.key"),
            dir,
        }
    }

    /// An HTTPS client that trusts only this CA (plus the system roots),
    /// speaking HTTP/1.1 (WebSocket upgrades need it).
    pub fn client(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.ca_pem).unwrap();
        let ca = reqwest::Certificate::from_pem(&pem).expect("the CA parses");
        reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(ca)
            .http1_only()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }
}
