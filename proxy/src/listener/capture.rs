//! Transparent sidecar capture, as Istio's init container sets it up: the iptables rules that
//! send a pod's inbound and outbound TCP through the proxy, and the original destination of a
//! redirected connection (`SO_ORIGINAL_DST`).
//!
//! The rules are written in `iptables-restore` format so they are applied atomically (and can be
//! reviewed as printed): everything lives in `SWITCHYARD_*` chains of the `nat` table, hooked
//! from `PREROUTING` (inbound) and `OUTPUT` (outbound).

use std::fmt::Write as _;
use std::net::SocketAddr;

/// What to capture and where to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRules {
    /// The proxy's inbound listener: TCP arriving at the pod goes here.
    pub inbound_port: u16,
    /// The proxy's outbound listener: TCP the pod's processes open goes here.
    pub outbound_port: u16,
    /// Processes of these users are not captured: the proxy's own user, so its upstream
    /// connections are not sent back to itself.
    pub exclude_uids: Vec<u32>,
    /// Inbound destination ports to capture; empty means all.
    pub inbound_ports: Vec<u16>,
    /// Inbound destination ports never captured (e.g. 22, or the proxy's admin port).
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports never captured.
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destinations (CIDRs) never captured.
    pub exclude_outbound_cidrs: Vec<String>,
}

/// The chains the rules create, in order.
const CHAINS: [&str; 4] = [
    "SWITCHYARD_INBOUND",
    "SWITCHYARD_IN_REDIRECT",
    "SWITCHYARD_OUTPUT",
    "SWITCHYARD_REDIRECT",
];

impl CaptureRules {
    /// The rules as `iptables-restore --noflush` input.
    pub fn to_restore_input(&self) -> String {
        let mut out = String::from("*nat\n");
        for chain in CHAINS {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        let _ = writeln!(
            out,
            "-A SWITCHYARD_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
            self.inbound_port
        );
        let _ = writeln!(
            out,
            "-A SWITCHYARD_REDIRECT -p tcp -j REDIRECT --to-ports {}",
            self.outbound_port
        );

        // Inbound: connections arriving at the pod, except to excluded ports.
        out.push_str("-A PREROUTING -p tcp -j SWITCHYARD_INBOUND\n");
        for port in &self.exclude_inbound_ports {
            let _ = writeln!(out, "-A SWITCHYARD_INBOUND -p tcp --dport {port} -j RETURN");
        }
        if self.inbound_ports.is_empty() {
            out.push_str("-A SWITCHYARD_INBOUND -p tcp -j SWITCHYARD_IN_REDIRECT\n");
        } else {
            for port in &self.inbound_ports {
                let _ = writeln!(
                    out,
                    "-A SWITCHYARD_INBOUND -p tcp --dport {port} -j SWITCHYARD_IN_REDIRECT"
                );
            }
        }

        // Outbound: connections the pod's processes open, except the proxy's own, loopback
        // and excluded destinations.
        out.push_str("-A OUTPUT -p tcp -j SWITCHYARD_OUTPUT\n");
        for uid in &self.exclude_uids {
            let _ = writeln!(
                out,
                "-A SWITCHYARD_OUTPUT -m owner --uid-owner {uid} -j RETURN"
            );
        }
        out.push_str("-A SWITCHYARD_OUTPUT -d 127.0.0.1/32 -j RETURN\n");
        for cidr in &self.exclude_outbound_cidrs {
            let _ = writeln!(out, "-A SWITCHYARD_OUTPUT -d {cidr} -j RETURN");
        }
        for port in &self.exclude_outbound_ports {
            let _ = writeln!(out, "-A SWITCHYARD_OUTPUT -p tcp --dport {port} -j RETURN");
        }
        out.push_str("-A SWITCHYARD_OUTPUT -j SWITCHYARD_REDIRECT\n");
        out.push_str("COMMIT\n");
        out
    }

    /// Checks what iptables would otherwise reject with a less helpful message.
    pub fn validate(&self) -> Result<(), String> {
        if self.inbound_port == 0 || self.outbound_port == 0 {
            return Err("--inbound-port and --outbound-port must be set (not 0)".into());
        }
        if self.inbound_port == self.outbound_port {
            return Err("--inbound-port and --outbound-port must differ".into());
        }
        if self.exclude_uids.is_empty() {
            return Err(
                "--exclude-uid is required: without it the proxy's own upstream connections \
                 would be captured and loop back into it"
                    .into(),
            );
        }
        for cidr in &self.exclude_outbound_cidrs {
            let (addr, prefix) = cidr.split_once('/').unwrap_or((cidr, "32"));
            let ok = addr.parse::<std::net::Ipv4Addr>().is_ok()
                && prefix.parse::<u8>().is_ok_and(|p| p <= 32);
            if !ok {
                return Err(format!(
                    "--exclude-outbound-cidr {cidr:?} is not an IPv4 CIDR like 10.0.0.0/8"
                ));
            }
        }
        Ok(())
    }
}

/// Where a connection redirected by the capture rules was going: the address the client dialed
/// before iptables sent it to us. `None` for a connection that was not redirected.
pub fn original_destination(stream: &tokio::net::TcpStream) -> Option<SocketAddr> {
    let socket = socket2::SockRef::from(stream);
    let original = socket.original_dst_v4().ok()?.as_socket()?;
    // A connection made to the listener directly reports the listener's own address.
    (Some(original) != stream.local_addr().ok()).then_some(original)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> CaptureRules {
        CaptureRules {
            inbound_port: 15006,
            outbound_port: 15001,
            exclude_uids: vec![1337],
            inbound_ports: vec![],
            exclude_inbound_ports: vec![22],
            exclude_outbound_ports: vec![],
            exclude_outbound_cidrs: vec!["169.254.169.254/32".into()],
        }
    }

    #[test]
    fn the_rules_redirect_both_ways_and_spare_the_proxy_itself() {
        let text = rules().to_restore_input();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.first(), Some(&"*nat"));
        assert_eq!(lines.last(), Some(&"COMMIT"));
        for expected in [
            "-A SWITCHYARD_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
            "-A SWITCHYARD_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
            "-A PREROUTING -p tcp -j SWITCHYARD_INBOUND",
            "-A OUTPUT -p tcp -j SWITCHYARD_OUTPUT",
            "-A SWITCHYARD_INBOUND -p tcp --dport 22 -j RETURN",
            "-A SWITCHYARD_INBOUND -p tcp -j SWITCHYARD_IN_REDIRECT",
            "-A SWITCHYARD_OUTPUT -m owner --uid-owner 1337 -j RETURN",
            "-A SWITCHYARD_OUTPUT -d 169.254.169.254/32 -j RETURN",
        ] {
            assert!(lines.contains(&expected), "missing {expected:?} in\n{text}");
        }
        // Exclusions come before the catch-all redirect, or they would never match.
        let position = |line: &str| lines.iter().position(|l| *l == line);
        assert!(
            position("-A SWITCHYARD_OUTPUT -m owner --uid-owner 1337 -j RETURN")
                < position("-A SWITCHYARD_OUTPUT -j SWITCHYARD_REDIRECT")
        );
        assert!(
            position("-A SWITCHYARD_INBOUND -p tcp --dport 22 -j RETURN")
                < position("-A SWITCHYARD_INBOUND -p tcp -j SWITCHYARD_IN_REDIRECT")
        );
    }

    #[test]
    fn listed_inbound_ports_are_the_only_ones_captured() {
        let mut rules = rules();
        rules.inbound_ports = vec![80, 8080];
        let text = rules.to_restore_input();
        assert!(text.contains("-A SWITCHYARD_INBOUND -p tcp --dport 80 -j SWITCHYARD_IN_REDIRECT"));
        assert!(
            text.contains("-A SWITCHYARD_INBOUND -p tcp --dport 8080 -j SWITCHYARD_IN_REDIRECT")
        );
        assert!(!text.contains("-A SWITCHYARD_INBOUND -p tcp -j SWITCHYARD_IN_REDIRECT"));
    }

    #[test]
    fn rules_that_would_loop_or_not_parse_are_refused() {
        let mut no_uid = rules();
        no_uid.exclude_uids.clear();
        assert!(no_uid.validate().unwrap_err().contains("--exclude-uid"));
        let mut same = rules();
        same.outbound_port = same.inbound_port;
        assert!(same.validate().unwrap_err().contains("must differ"));
        let mut bad_cidr = rules();
        bad_cidr.exclude_outbound_cidrs = vec!["10.0.0.0/40".into()];
        assert!(bad_cidr.validate().unwrap_err().contains("10.0.0.0/40"));
        assert_eq!(rules().validate(), Ok(()));
    }
}
