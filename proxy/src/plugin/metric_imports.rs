//! The `metrics` imports, defined on the linker by hand. `bindgen!`'s host traits take owned
//! arguments, so every update would copy the metric's name and each label out of the plugin's
//! memory into new `String`s (four allocations for a counter with one label) only to hash them and
//! find the cached handle; here they are read in place ([`WasmStr`]) and copied only the first
//! time a metric is seen. These definitions shadow the generated ones, which stay as the
//! fallback the `Host` trait requires.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};

use hashbrown::Equivalent;
use wasmtime::component::{Linker, WasmList, WasmStr};
use wasmtime::{AsContext, AsContextMut, StoreContextMut};

use super::host::{HostState, MetricHandle, MetricKey, MetricKind};

/// The interface as the component names its import.
const INTERFACE: &str = "switchyard:plugin/metrics@0.1.0";
/// Labels read in place; a metric with more is looked up with owned copies.
const MAX_BORROWED_LABELS: usize = 8;

type Labels = WasmList<(WasmStr, WasmStr)>;

/// Replaces the generated `metrics` functions of `linker` with the in-place ones.
pub fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut metrics = linker.instance(INTERFACE)?;
    metrics.func_wrap(
        "counter-add",
        |store, (name, labels, value): (WasmStr, Labels, u64)| {
            update(store, MetricKind::Counter, &name, &labels, |handle| {
                if let MetricHandle::Counter(c) = handle {
                    c.increment(value);
                }
            })
        },
    )?;
    metrics.func_wrap(
        "gauge-set",
        |store, (name, labels, value): (WasmStr, Labels, f64)| {
            update(store, MetricKind::Gauge, &name, &labels, |handle| {
                if let MetricHandle::Gauge(g) = handle {
                    g.set(value);
                }
            })
        },
    )?;
    metrics.func_wrap(
        "histogram-record",
        |store, (name, labels, value): (WasmStr, Labels, f64)| {
            update(store, MetricKind::Histogram, &name, &labels, |handle| {
                if let MetricHandle::Histogram(h) = handle {
                    h.record(value);
                }
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Applies `apply` to the metric's handle: found by the borrowed name and labels when cached,
/// made from owned copies the first time.
fn update(
    mut store: StoreContextMut<'_, HostState>,
    kind: MetricKind,
    name: &WasmStr,
    labels: &Labels,
    apply: impl Fn(&MetricHandle),
) -> wasmtime::Result<()> {
    let count = labels.len();
    if count > MAX_BORROWED_LABELS {
        let pairs: Vec<(WasmStr, WasmStr)> = labels
            .iter(store.as_context_mut())?
            .collect::<wasmtime::Result<_>>()?;
        let view = store.as_context();
        let mut owned = Vec::with_capacity(count);
        for (key, value) in &pairs {
            owned.push((
                key.to_str(&view)?.into_owned(),
                value.to_str(&view)?.into_owned(),
            ));
        }
        let key = (kind, name.to_str(&view)?.into_owned(), owned);
        apply(store.data_mut().metric(key));
        return Ok(());
    }
    // Where each string is (lifting a list element needs the store mutably), then the strings.
    let mut pairs: [Option<(WasmStr, WasmStr)>; MAX_BORROWED_LABELS] =
        std::array::from_fn(|_| None);
    for (slot, pair) in pairs.iter_mut().zip(labels.iter(store.as_context_mut())?) {
        *slot = Some(pair?);
    }
    let key = {
        let view = store.as_context();
        let name = name.to_str(&view)?;
        let mut borrowed: [(Cow<'_, str>, Cow<'_, str>); MAX_BORROWED_LABELS] =
            std::array::from_fn(|_| (Cow::Borrowed(""), Cow::Borrowed("")));
        for (slot, (key, value)) in borrowed.iter_mut().zip(pairs.iter().flatten()) {
            *slot = (key.to_str(&view)?, value.to_str(&view)?);
        }
        apply_to(view.data(), kind, &name, &borrowed[..count], &apply)
    };
    if let Err(key) = key {
        apply(store.data_mut().metric(key));
    }
    Ok(())
}

/// Applies `apply` to the metric named by borrowed parts: the cached handle, else one made
/// (and cached) from owned copies.
pub(super) fn apply(
    state: &mut HostState,
    kind: MetricKind,
    name: &str,
    labels: &[(Cow<'_, str>, Cow<'_, str>)],
    apply: impl Fn(&MetricHandle),
) {
    if let Err(key) = apply_to(state, kind, name, labels, &apply) {
        apply(state.metric(key));
    }
}

/// The cached handle's update, or the owned key to make it with.
fn apply_to(
    state: &HostState,
    kind: MetricKind,
    name: &str,
    labels: &[(Cow<'_, str>, Cow<'_, str>)],
    apply: &impl Fn(&MetricHandle),
) -> Result<(), MetricKey> {
    let lookup = MetricLookup { kind, name, labels };
    match state.cached_metric(&lookup) {
        Some(handle) => {
            apply(handle);
            Ok(())
        }
        None => Err(lookup.to_key()),
    }
}

/// A [`MetricKey`] of borrowed parts; hashes as the key does (a `Cow<str>` and a `String` both
/// hash as their `str`, a slice and a `Vec` as their length and elements).
pub(super) struct MetricLookup<'a> {
    kind: MetricKind,
    name: &'a str,
    labels: &'a [(Cow<'a, str>, Cow<'a, str>)],
}

impl MetricLookup<'_> {
    /// The owned key, for a metric seen the first time.
    fn to_key(&self) -> MetricKey {
        let labels = self
            .labels
            .iter()
            .map(|(k, v)| (k.clone().into_owned(), v.clone().into_owned()))
            .collect();
        (self.kind, self.name.to_owned(), labels)
    }
}

impl Hash for MetricLookup<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.kind, self.name, self.labels).hash(state);
    }
}

impl Equivalent<MetricKey> for MetricLookup<'_> {
    fn equivalent(&self, (kind, name, labels): &MetricKey) -> bool {
        self.kind == *kind
            && self.name == name
            && self.labels.len() == labels.len()
            && self
                .labels
                .iter()
                .zip(labels)
                .all(|((k, v), (key, value))| k == key && v == value)
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher as _;

    use rustc_hash::FxBuildHasher;

    use super::*;

    #[test]
    fn a_lookup_hashes_and_compares_as_its_key() {
        let key: MetricKey = (
            MetricKind::Counter,
            "requests".to_owned(),
            vec![("backend".to_owned(), "v2".to_owned())],
        );
        let labels = [(Cow::Borrowed("backend"), Cow::Borrowed("v2"))];
        let lookup = MetricLookup {
            kind: MetricKind::Counter,
            name: "requests",
            labels: &labels,
        };
        assert_eq!(
            FxBuildHasher.hash_one(&key),
            FxBuildHasher.hash_one(&lookup)
        );
        assert!(lookup.equivalent(&key));

        let gauge = MetricLookup {
            kind: MetricKind::Gauge,
            ..lookup
        };
        assert!(!gauge.equivalent(&key));
        let other = [(Cow::Borrowed("backend"), Cow::Borrowed("v1"))];
        let other_value = MetricLookup {
            labels: &other,
            ..lookup
        };
        assert!(!other_value.equivalent(&key));
        let fewer = MetricLookup {
            labels: &[],
            ..lookup
        };
        assert!(!fewer.equivalent(&key));
    }
}
