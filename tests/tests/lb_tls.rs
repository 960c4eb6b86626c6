//! Load balancers over https: the master trusts a private CA given with
//! `--lb-ca`, and refuses a load balancer whose certificate it cannot verify.
//! The stand-in load balancer sits behind a real nginx that terminates TLS
//! with a certificate from a CA generated at test time.

mod edge_common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chat_tests::{Server, ServerOpts, procs::free_port};
use edge_common::{Certs, FakeLb, lb_name, lb_status_of, nginx_bin};

/// Bound of waits for heartbeats (every 200 ms) to show up.
const BEATS: Duration = Duration::from_secs(10);

/// nginx terminating TLS on `port` in front of `upstream` (http).
struct TlsProxy {
    child: Child,
    _prefix: tempfile::TempDir,
}

impl TlsProxy {
    async fn start(certs: &Certs, port: u16, upstream: &str) -> TlsProxy {
        let prefix = tempfile::Builder::new()
            .prefix("chat-lb-tls-")
            .tempdir()
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(prefix.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(prefix.path().join("logs")).unwrap();
        let p = prefix.path().display();
        let conf = format!(
            "pid {p}/nginx.pid;\nerror_log {p}/logs/error.log info;\nworker_processes 1;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
               fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
               server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n\
                 location / {{ proxy_pass {upstream}; }}\n  }}\n}}\n",
            cert = certs.cert.display(),
            key = certs.key.display(),
        );
        let conf_path = prefix.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(nginx_bin())
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(prefix.path())
            .arg("-e")
            .arg(prefix.path().join("logs").join("error.log"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nginx (tests/run installs it): {e}"));
        chat_tests::wait_for(
            Duration::from_secs(10),
            "nginx accepts connections",
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        TlsProxy {
            child,
            _prefix: prefix,
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        edge_common::stop_nginx(&mut self.child);
    }
}

async fn host(lb_url: &str, ca: Option<&std::path::Path>) -> Server {
    let mut args = vec![
        "--load-balancers".to_owned(),
        lb_url.to_owned(),
        "--lb-key".to_owned(),
        "lb-secret".to_owned(),
        "--lb-interval".to_owned(),
        "200ms".to_owned(),
        "--host".to_owned(),
        "http://127.0.0.1".to_owned(),
    ];
    if let Some(ca) = ca {
        args.push("--lb-ca".to_owned());
        args.push(ca.display().to_string());
    }
    Server::start(ServerOpts::new().args(args)).await
}

#[tokio::test]
async fn https_load_balancer_with_a_private_ca() {
    let certs = Certs::make();
    let lb = FakeLb::start("lb-secret", Duration::from_secs(30)).await;
    let port = free_port();
    let _tls = TlsProxy::start(&certs, port, &lb.url()).await;
    let url = format!("https://localhost:{port}");

    // Trusting the CA: it registers.
    let trusted = host(&url, Some(&certs.ca_pem)).await;
    let name = lb_name(trusted.port);
    let rec = lb
        .wait_host(BEATS, &name, "registered over https", |_| true)
        .await;
    assert!(rec.capacity > 0, "{rec:?}");
    let status = lb_status_of(&trusted, &url).await;
    assert_eq!(status["breaker"], "closed", "{status}");

    // Without the CA the certificate cannot be verified: heartbeats fail and
    // the breaker opens, while the APIs keep answering.
    let untrusted = host(&url, None).await;
    let bad = lb_name(untrusted.port);
    chat_tests::wait_for(BEATS, "the breaker of an unverifiable LB opens", || {
        let s = &untrusted;
        let u = url.clone();
        async move {
            let st = lb_status_of(s, &u).await;
            (st["breaker"] == "open").then_some(())
        }
    })
    .await;
    assert!(
        lb.host(&bad).is_none(),
        "an unverified LB must never hear from us"
    );
    let r = untrusted.create_room("still-works").await;
    assert!(r > 0);
}
