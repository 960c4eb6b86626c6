//! Finding the server and its keys: flags, then the environment, then the
//! files the master writes in its run directory (`master.json`, `keys.json`).

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Deserialize;
use url::Url;

/// `<run-dir>/master.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct MasterInfo {
    pub port: u16,
    #[serde(default)]
    pub admin_port: Option<u16>,
    #[serde(default)]
    pub admin_url: Option<String>,
    /// Not written by the master yet; used when present.
    #[serde(default)]
    pub api_url: Option<String>,
}

/// `<run-dir>/keys.json` (only written when the master generated its keys).
#[derive(Debug, Clone, Deserialize)]
pub struct KeyFile {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub admin_key: Option<String>,
}

/// What was given on the command line or in the environment.
#[derive(Debug, Clone, Default)]
pub struct Given {
    pub admin_url: Option<String>,
    pub api_url: Option<String>,
    pub run_dir: PathBuf,
    pub key: Option<String>,
    pub api_key: Option<String>,
}

/// Resolves URLs and keys on demand: a command that needs only the admin API
/// never reads `keys.json` for the room key, and `token` reads nothing.
pub struct Locator {
    given: Given,
    master: OnceLock<Result<MasterInfo, String>>,
    keys: OnceLock<Result<KeyFile, String>>,
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A URL written by a master bound to all interfaces (`0.0.0.0`, `[::]`)
/// is reached on loopback.
fn loopback_if_unspecified(mut url: Url) -> Url {
    let replacement = match url.host() {
        Some(url::Host::Ipv4(ip)) if ip.is_unspecified() => Some("127.0.0.1"),
        Some(url::Host::Ipv6(ip)) if ip.is_unspecified() => Some("[::1]"),
        _ => None,
    };
    if let Some(h) = replacement {
        // Cannot fail for an http URL that already has a host.
        let _ = url.set_host(Some(h));
    }
    url
}

/// Parses a base URL (`http://host:port`), refusing anything but http(s).
pub fn parse_base_url(raw: &str, what: &str) -> Result<Url> {
    let url = Url::parse(raw).with_context(|| format!("invalid {what} {raw:?}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        bail!("invalid {what} {raw:?}: expected http://HOST:PORT");
    }
    Ok(url)
}

impl Locator {
    pub fn new(given: Given) -> Self {
        Self {
            given,
            master: OnceLock::new(),
            keys: OnceLock::new(),
        }
    }

    fn master(&self) -> Result<&MasterInfo> {
        let path = self.given.run_dir.join("master.json");
        self.master
            .get_or_init(|| {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        format!(
                            "no {} (is chatserver running with this run directory? use --run-dir or --admin-url)",
                            path.display()
                        )
                    } else {
                        format!("cannot read {}: {e}", path.display())
                    }
                })?;
                serde_json::from_str(&text)
                    .map_err(|e| format!("{} is not valid: {e}", path.display()))
            })
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }

    fn keys(&self) -> Result<&KeyFile> {
        let path = self.given.run_dir.join("keys.json");
        self.keys
            .get_or_init(|| {
                let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => format!("no {}", path.display()),
                    std::io::ErrorKind::PermissionDenied => format!(
                        "cannot read {} (it is readable by its owner only)",
                        path.display()
                    ),
                    _ => format!("cannot read {}: {e}", path.display()),
                })?;
                serde_json::from_str(&text)
                    .map_err(|e| format!("{} is not valid: {e}", path.display()))
            })
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }

    /// The admin API's base URL.
    pub fn admin_url(&self) -> Result<Url> {
        if let Some(u) = non_empty(&self.given.admin_url) {
            return parse_base_url(u, "admin URL");
        }
        let m = self
            .master()
            .context("cannot find the admin API (no --admin-url or CHATCTL_ADMIN_URL)")?;
        match (&m.admin_url, m.admin_port) {
            (Some(u), _) if !u.trim().is_empty() => {
                parse_base_url(u, "admin_url of master.json").map(loopback_if_unspecified)
            }
            (_, Some(p)) => parse_base_url(&format!("http://127.0.0.1:{p}"), "admin URL"),
            _ => bail!("master.json has no admin_url; use --admin-url"),
        }
    }

    /// The admin URL if it can be found, without failing.
    pub fn admin_url_opt(&self) -> Option<Url> {
        self.admin_url().ok()
    }

    /// The room API's base URL.
    pub fn api_url(&self) -> Result<Url> {
        if let Some(u) = non_empty(&self.given.api_url) {
            return parse_base_url(u, "API URL");
        }
        let m = self
            .master()
            .context("cannot find the room API (no --api-url or CHATCTL_API_URL)")?;
        match &m.api_url {
            Some(u) if !u.trim().is_empty() => {
                parse_base_url(u, "api_url of master.json").map(loopback_if_unspecified)
            }
            _ => parse_base_url(&format!("http://127.0.0.1:{}", m.port), "API URL"),
        }
    }

    /// The admin key.
    pub fn admin_key(&self) -> Result<String> {
        if let Some(k) = non_empty(&self.given.key) {
            return Ok(k.to_owned());
        }
        let keys = self
            .keys()
            .context("no admin key (use --key or ADMIN_KEY)")?;
        match non_empty(&keys.admin_key) {
            Some(k) => Ok(k.to_owned()),
            None => bail!("no admin key (use --key or ADMIN_KEY): keys.json has none"),
        }
    }

    /// The room API key.
    pub fn api_key(&self) -> Result<String> {
        if let Some(k) = non_empty(&self.given.api_key) {
            return Ok(k.to_owned());
        }
        let keys = self
            .keys()
            .context("no room API key (use --api-key or KEY)")?;
        match non_empty(&keys.key) {
            Some(k) => Ok(k.to_owned()),
            None => bail!("no room API key (use --api-key or KEY): keys.json has none"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_hosts_become_loopback() {
        let u = |s: &str| loopback_if_unspecified(Url::parse(s).unwrap()).to_string();
        assert_eq!(u("http://0.0.0.0:8090"), "http://127.0.0.1:8090/");
        assert_eq!(u("http://[::]:8090"), "http://[::1]:8090/");
        assert_eq!(u("http://10.0.0.5:8090"), "http://10.0.0.5:8090/");
    }

    #[test]
    fn finds_the_server_in_the_run_dir() {
        let dir = std::env::temp_dir().join(format!("chatctl-locate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("master.json"),
            r#"{"pid":1,"port":8080,"admin_port":8090,"admin_url":"http://0.0.0.0:8090","version":"0.1.0"}"#,
        )
        .unwrap();
        std::fs::write(dir.join("keys.json"), r#"{"key":"k","admin_key":"ak"}"#).unwrap();
        let l = Locator::new(Given {
            run_dir: dir.clone(),
            ..Given::default()
        });
        assert_eq!(l.admin_url().unwrap().as_str(), "http://127.0.0.1:8090/");
        assert_eq!(l.api_url().unwrap().as_str(), "http://127.0.0.1:8080/");
        assert_eq!(l.admin_key().unwrap(), "ak");
        assert_eq!(l.api_key().unwrap(), "k");
        let given = Locator::new(Given {
            run_dir: dir.join("nowhere"),
            key: Some("flag".into()),
            admin_url: Some("http://h:1".into()),
            ..Given::default()
        });
        assert_eq!(given.admin_key().unwrap(), "flag");
        assert_eq!(given.admin_url().unwrap().as_str(), "http://h:1/");
        let err = format!("{:#}", given.api_key().unwrap_err());
        assert!(err.contains("keys.json"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
