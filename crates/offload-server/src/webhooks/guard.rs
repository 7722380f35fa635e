//! Where webhooks may go. Unless `allow_private_targets` is set, a target
//! whose address is loopback, private, link-local, shared, unspecified,
//! multicast, documentation or otherwise not on the public internet is
//! refused — both when a subscription is made and at every delivery, after
//! DNS resolution (the resolver below drops such addresses, so a name that
//! changes its answer later cannot reach them either). Redirects are not
//! followed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is an address webhooks may reach without
/// `allow_private_targets`.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            // IPv4-compatible (::a.b.c.d) and IPv4-translated (::ffff:0:a.b.c.d)
            if s[..6] == [0; 6] || s[..6] == [0, 0, 0, 0, 0xffff, 0] {
                return false;
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64
                || s[0] == 0x2002 // 6to4 (may embed a private v4)
                || (s[0] == 0x2001 && s[1] == 0) // Teredo
                || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0010) // ORCHID
                || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0)) // discard
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

/// Why a target is refused.
pub(crate) fn refusal(url: &str, ip: IpAddr) -> String {
    format!(
        "{url} resolves to {ip}, a loopback, private or otherwise non-public address; \
         set allow_private_targets = true under [webhooks] in offload.toml to allow it"
    )
}

/// The host of an `http(s)://` URL as an address, if it is one.
pub(crate) fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()
}

/// Checks a target now: its literal address, or every address its name
/// resolves to. `Err` says why it is refused.
pub(crate) async fn check(url: &str, allow_private: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url} is not a URL: {e}"))?;
    if allow_private {
        return Ok(());
    }
    if let Some(ip) = literal_ip(&parsed) {
        return if is_public(ip) {
            Ok(())
        } else {
            Err(refusal(url, ip))
        };
    }
    let host = parsed.host_str().unwrap_or_default().to_owned();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    match addrs.iter().find(|a| !is_public(a.ip())) {
        Some(a) => Err(refusal(url, a.ip())),
        None if addrs.is_empty() => Err(format!("{host} resolves to no address")),
        None => Ok(()),
    }
}

/// A resolver that only hands out public addresses (all addresses when
/// private targets are allowed).
#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver {
    pub(crate) allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if found.is_empty() {
                let e: Box<dyn std::error::Error + Send + Sync> = format!(
                    "{host} resolves to no public address (set allow_private_targets to reach private ones)"
                )
                .into();
                return Err(e);
            }
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// The resolver as reqwest takes it.
pub(crate) fn resolver(allow_private: bool) -> Arc<GuardedResolver> {
    Arc::new(GuardedResolver { allow_private })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
            "::7f00:1",
            "::ffff:0:7f00:1",
            "100::1",
            "2001:10::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn loopback_targets_are_refused_unless_allowed() {
        let err = check("http://127.0.0.1:9/x", false).await.unwrap_err();
        assert!(err.contains("allow_private_targets"), "{err}");
        assert!(check("http://[::1]:9/x", false).await.is_err());
        assert!(check("http://localhost:9/x", false).await.is_err());
        assert!(check("http://127.0.0.1:9/x", true).await.is_ok());
    }
}
