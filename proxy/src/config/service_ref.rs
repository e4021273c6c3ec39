//! `kubernetes_service = "name.namespace:port"`: which Service a cluster's endpoints come from.
//! A config value (validated with the rest of the file); the Kubernetes module watches it.

use std::fmt;

use serde::Serialize;

/// `name.namespace:port` — a Service and the port to reach: the pods' port number, or the name
/// of a Service port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ServiceRef {
    pub name: String,
    pub namespace: String,
    pub port: PortRef,
}

/// A Service port by number or by name (`http`), as EndpointSlices list them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

impl ServiceRef {
    /// Parses `name.namespace:port` (`namespace` defaults to `default`).
    pub fn parse(text: &str) -> Option<Self> {
        let (service, port) = text.rsplit_once(':')?;
        let (name, namespace) = service.split_once('.').unwrap_or((service, "default"));
        let label = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if !label(name) || !label(namespace) || port.is_empty() {
            return None;
        }
        let port = match port.parse::<u16>() {
            Ok(0) => return None,
            Ok(n) => PortRef::Number(n),
            Err(_) if label(port) => PortRef::Name(port.to_owned()),
            Err(_) => return None,
        };
        Some(Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            port,
        })
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.port {
            PortRef::Number(n) => write!(f, "{}.{}:{n}", self.name, self.namespace),
            PortRef::Name(p) => write!(f, "{}.{}:{p}", self.name, self.namespace),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_references_parse_as_written() {
        let s = ServiceRef::parse("orders.shop:8080").unwrap();
        assert_eq!((s.name.as_str(), s.namespace.as_str()), ("orders", "shop"));
        assert_eq!(s.port, PortRef::Number(8080));
        let s = ServiceRef::parse("orders:http").unwrap();
        assert_eq!(s.namespace, "default");
        assert_eq!(s.port, PortRef::Name("http".into()));
        for bad in [
            "orders",
            "Orders.shop:80",
            "orders.shop:0",
            "orders.shop:",
            ".shop:80",
        ] {
            assert!(ServiceRef::parse(bad).is_none(), "{bad}");
        }
    }
}
