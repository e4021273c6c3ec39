//! The keys each table of the config file takes, read from the raw types' `Deserialize` impls:
//! an unknown key's "expected one of" lists exactly what the parser accepts, and cannot drift
//! from it as keys are added.

use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::raw::{
    RawAccessLog, RawAdmin, RawCircuitBreaker, RawCluster, RawClusterTls, RawConfig,
    RawHealthCheck, RawLimits, RawListener, RawListenerTls, RawOutlier, RawPlugin, RawRoute,
    RawRuntime, RawSniCert, RawTracing,
};

/// The keys of the table at `path` (table names, array indices left out: `["cluster", "tls"]`),
/// empty when the path is no table of the config.
pub fn keys_of(path: &[&str]) -> &'static [&'static str] {
    match path {
        [] => fields::<RawConfig>(),
        ["admin"] => fields::<RawAdmin>(),
        ["runtime"] => fields::<RawRuntime>(),
        ["access_log"] => fields::<RawAccessLog>(),
        ["tracing"] => fields::<RawTracing>(),
        ["listener"] => fields::<RawListener>(),
        ["listener", "tls"] => fields::<RawListenerTls>(),
        ["listener", "tls", "sni"] => fields::<RawSniCert>(),
        ["listener", "route"] => fields::<RawRoute>(),
        ["cluster"] => fields::<RawCluster>(),
        ["cluster", "tls"] => fields::<RawClusterTls>(),
        ["cluster", "health_check"] => fields::<RawHealthCheck>(),
        ["cluster", "outlier"] => fields::<RawOutlier>(),
        ["cluster", "circuit_breaker"] => fields::<RawCircuitBreaker>(),
        ["plugin"] => fields::<RawPlugin>(),
        ["plugin", "limits"] => fields::<RawLimits>(),
        _ => &[],
    }
}

/// The field names `T` deserializes: a derived `Deserialize` hands them to
/// `deserialize_struct`, where this deserializer keeps them and stops.
fn fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields = None;
    let _ = T::deserialize(FieldNames(&mut fields));
    fields.unwrap_or(&[])
}

struct FieldNames<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("field names read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_lists_the_keys_its_raw_type_takes() {
        assert!(keys_of(&[]).contains(&"listener"));
        assert!(keys_of(&["listener"]).contains(&"max_request_headers"));
        assert!(keys_of(&["listener"]).contains(&"tls"));
        assert!(keys_of(&["cluster"]).contains(&"circuit_breaker"));
        assert_eq!(
            keys_of(&["cluster", "circuit_breaker"]),
            [
                "max_connections",
                "max_pending_requests",
                "max_requests",
                "max_retries"
            ]
        );
        assert_eq!(
            keys_of(&["listener", "tls", "sni"]),
            ["server_names", "cert", "key"]
        );
        assert_eq!(keys_of(&["plugin", "limits"]), ["time", "memory"]);
        assert!(keys_of(&["nothing"]).is_empty());
    }
}
