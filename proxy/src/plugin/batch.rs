//! The `batch` import: the changes a hook made, in one host call instead of one each (the WIT's
//! `batch` interface describes the encoding). The bytes come from the plugin, so every length is
//! checked, nothing here panics, and an error names the change that could not be applied.
//!
//! The import is defined on the linker by hand ([`define`]): `bindgen!`'s host trait takes the
//! batch as a new `Vec<u8>`, an allocation and a free on every hook that changes anything; here
//! it is copied into a buffer the instance keeps.

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, WasmList};

use super::bindings::switchyard::plugin::batch;
use super::heads::HeaderChange;
use super::host::{HostState, MetricHandle, MetricKey, MetricKind};

/// The interface as the component names its import.
const INTERFACE: &str = "switchyard:plugin/batch@0.1.0";
/// A buffer grown past this by an unusually large batch is not kept for the next one.
const KEPT_BUFFER_BYTES: usize = 16 * 1024;

/// Replaces the generated `batch.apply` of `linker` with one that reads the batch into the
/// instance's buffer.
pub fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.instance(INTERFACE)?.func_wrap(
        "apply",
        |mut store: StoreContextMut<'_, HostState>, (changes,): (WasmList<u8>,)| {
            let mut buffer = std::mem::take(&mut store.data_mut().batch_buffer);
            buffer.clear();
            buffer.extend_from_slice(changes.as_le_slice(&store));
            let applied = store.data_mut().apply_batch(&buffer);
            if buffer.capacity() <= KEPT_BUFFER_BYTES {
                store.data_mut().batch_buffer = buffer;
            }
            Ok((applied,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The tag of each change; the SDK writes the same numbers.
const SET_REQUEST_HEADER: u8 = 1;
const ADD_REQUEST_HEADER: u8 = 2;
const REMOVE_REQUEST_HEADER: u8 = 3;
const ADD_CLIENT_RESPONSE_HEADER: u8 = 4;
const SET_CONTEXT: u8 = 5;
const METRIC: u8 = 6;
const NUMBER_METRIC: u8 = 7;
const NUMBERED_METRIC: u8 = 8;

/// The generated import, which [`define`] shadows; kept because the generated linking requires it.
impl batch::Host for HostState {
    fn apply(&mut self, changes: Vec<u8>) -> Result<(), String> {
        self.apply_batch(&changes)
    }
}

impl HostState {
    /// Applies a batch's changes in order, stopping at the first that cannot be applied.
    pub(super) fn apply_batch(&mut self, changes: &[u8]) -> Result<(), String> {
        let mut reader = Reader { rest: changes };
        let mut index = 0usize;
        while !reader.rest.is_empty() {
            let change = Change::read(&mut reader)
                .map_err(|e| e.to_string())
                .and_then(|change| self.apply_change(change))
                .map_err(|e| format!("change {index} of the batch: {e}"));
            change?;
            index += 1;
        }
        Ok(())
    }
}

/// One change, read in place from the batch.
#[derive(Debug, PartialEq)]
enum Change<'a> {
    RequestHeader {
        change: HeaderChange,
        name: &'a str,
        value: &'a [u8],
    },
    RemoveRequestHeader(&'a str),
    ClientResponseHeader {
        name: &'a str,
        value: &'a [u8],
    },
    SetContext {
        key: &'a str,
        value: &'a [u8],
    },
    Metric {
        /// The metric as the SDK encoded it: kind, name, labels. Also its key in the instance's
        /// cache of handles, so a hot update neither checks nor copies its text
        /// ([`metric_key`] reads it the first time).
        identity: &'a [u8],
        /// A counter's increment, or a gauge's or histogram's value as `f64` bits.
        raw: u64,
    },
    /// A metric update that also numbers the metric in this instance for later updates
    /// ([`Change::NumberedMetric`]): a metric the plugin made once, updated the first time.
    NumberMetric {
        number: u32,
        identity: &'a [u8],
        raw: u64,
    },
    /// An update of a metric numbered before: no text to read, hash or compare.
    NumberedMetric {
        number: u32,
        raw: u64,
    },
}

impl<'a> Change<'a> {
    fn read(reader: &mut Reader<'a>) -> Result<Self, Malformed> {
        Ok(match reader.u8()? {
            tag @ (SET_REQUEST_HEADER | ADD_REQUEST_HEADER) => Change::RequestHeader {
                change: if tag == SET_REQUEST_HEADER {
                    HeaderChange::Set
                } else {
                    HeaderChange::Add
                },
                name: reader.str()?,
                value: reader.bytes()?,
            },
            REMOVE_REQUEST_HEADER => Change::RemoveRequestHeader(reader.str()?),
            ADD_CLIENT_RESPONSE_HEADER => Change::ClientResponseHeader {
                name: reader.str()?,
                value: reader.bytes()?,
            },
            SET_CONTEXT => Change::SetContext {
                key: reader.str()?,
                value: reader.bytes()?,
            },
            METRIC => Change::Metric {
                identity: reader.metric_identity()?,
                raw: reader.u64()?,
            },
            NUMBER_METRIC => Change::NumberMetric {
                number: reader.u32()?,
                identity: reader.metric_identity()?,
                raw: reader.u64()?,
            },
            NUMBERED_METRIC => Change::NumberedMetric {
                number: reader.u32()?,
                raw: reader.u64()?,
            },
            other => return Err(Malformed::UnknownTag(other)),
        })
    }
}

impl HostState {
    fn apply_change(&mut self, change: Change<'_>) -> Result<(), String> {
        match change {
            Change::RequestHeader {
                change,
                name,
                value,
            } => self.change_request_header(change, name, bytes::Bytes::copy_from_slice(value)),
            Change::RemoveRequestHeader(name) => {
                self.remove_request_header(name);
                Ok(())
            }
            Change::ClientResponseHeader { name, value } => {
                self.add_client_response_header(name, value)
            }
            Change::SetContext { key, value } => {
                self.set_context(key, value);
                Ok(())
            }
            Change::Metric { identity, raw } => self.update_metric_by_identity(
                identity,
                || metric_key(identity),
                |handle| update(handle, raw),
            ),
            Change::NumberMetric {
                number,
                identity,
                raw,
            } => {
                self.update_metric_by_identity(
                    identity,
                    || metric_key(identity),
                    |handle| update(handle, raw),
                )?;
                let handle = self
                    .metric_by_identity(identity)
                    .cloned()
                    .ok_or("the metric to number went missing")?;
                self.number_metric(number, handle)
            }
            Change::NumberedMetric { number, raw } => {
                let handle = self
                    .numbered_metric(number)
                    .ok_or_else(|| format!("no metric numbered {number} in this instance"))?;
                update(handle, raw);
                Ok(())
            }
        }
    }
}

/// A metric's update: a counter's increment, or a gauge's or histogram's value as `f64` bits.
fn update(handle: &MetricHandle, raw: u64) {
    match handle {
        MetricHandle::Counter(c) => c.increment(raw),
        MetricHandle::Gauge(g) => g.set(f64::from_bits(raw)),
        MetricHandle::Histogram(h) => h.record(f64::from_bits(raw)),
    }
}

/// The metric a batch change's `identity` names, its text checked: kind, name, labels.
fn metric_key(identity: &[u8]) -> Result<MetricKey, String> {
    let mut reader = Reader { rest: identity };
    let kind = match reader.u8()? {
        0 => MetricKind::Counter,
        1 => MetricKind::Gauge,
        2 => MetricKind::Histogram,
        other => return Err(format!("unknown metric kind {other}")),
    };
    let name = reader.str()?.to_owned();
    let count = reader.u8()?;
    let mut labels = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        labels.push((reader.str()?.to_owned(), reader.str()?.to_owned()));
    }
    Ok((kind, name, labels))
}

/// Why a batch's bytes could not be read as changes. Plain data, formatted only when a batch
/// is refused: the reads of a well-formed batch (every hook that changes anything) pass
/// nothing but a pointer and a length around.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Malformed {
    #[error("ends early: {wanted} bytes wanted, {left} left")]
    EndsEarly { wanted: usize, left: usize },
    #[error("a string is not UTF-8")]
    NotText,
    #[error("unknown change tag {0}")]
    UnknownTag(u8),
}

impl From<Malformed> for String {
    fn from(malformed: Malformed) -> Self {
        malformed.to_string()
    }
}

/// Reads the encoding's fields off the front of the batch.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let Some((taken, rest)) = self.rest.split_at_checked(n) else {
            return Err(Malformed::EndsEarly {
                wanted: n,
                left: self.rest.len(),
            });
        };
        self.rest = rest;
        Ok(taken)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    #[inline]
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.array::<1>()?[0])
    }

    #[inline]
    fn u32(&mut self) -> Result<u32, Malformed> {
        self.array().map(u32::from_le_bytes)
    }

    #[inline]
    fn u64(&mut self) -> Result<u64, Malformed> {
        self.array().map(u64::from_le_bytes)
    }

    #[inline]
    fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// A metric's kind, name and labels, stepped over by their lengths alone (their text is
    /// checked by [`metric_key`] when the metric is first used).
    fn metric_identity(&mut self) -> Result<&'a [u8], Malformed> {
        let start = self.rest;
        self.u8()?;
        self.bytes()?;
        for _ in 0..self.u8()? {
            self.bytes()?;
            self.bytes()?;
        }
        Ok(&start[..start.len() - self.rest.len()])
    }

    #[inline]
    fn str(&mut self) -> Result<&'a str, Malformed> {
        super::text::utf8(self.bytes()?).map_err(|_| Malformed::NotText)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every change the SDK writes (`plugin-sdk/src/batch.rs` has the same bytes in its test),
    /// read back in order.
    #[test]
    fn a_batch_reads_as_the_changes_the_sdk_wrote() {
        let mut bytes = vec![1];
        string(&mut bytes, b"x-a");
        string(&mut bytes, b"1");
        bytes.push(3);
        string(&mut bytes, b"x-b");
        bytes.extend_from_slice(&[6, 0]);
        string(&mut bytes, b"hits");
        bytes.push(1);
        string(&mut bytes, b"route");
        string(&mut bytes, b"api");
        bytes.extend_from_slice(&3u64.to_le_bytes());
        let mut reader = Reader { rest: &bytes };
        assert_eq!(
            Change::read(&mut reader),
            Ok(Change::RequestHeader {
                change: HeaderChange::Set,
                name: "x-a",
                value: b"1"
            })
        );
        assert_eq!(
            Change::read(&mut reader),
            Ok(Change::RemoveRequestHeader("x-b"))
        );
        let Ok(Change::Metric { identity, raw }) = Change::read(&mut reader) else {
            panic!("a metric");
        };
        assert_eq!(raw, 3);
        assert_eq!(
            metric_key(identity),
            Ok((
                MetricKind::Counter,
                "hits".to_owned(),
                vec![("route".to_owned(), "api".to_owned())]
            ))
        );
        assert!(reader.rest.is_empty());
    }

    fn host_state() -> HostState {
        let env = super::super::host::PluginEnv {
            name: "tested".into(),
            shared: Default::default(),
            time_limit: std::time::Duration::from_millis(10),
            memory_limit: 1 << 20,
        };
        HostState::new(std::sync::Arc::new(env))
    }

    /// Values for the client's response are what the plugin passed, remembered or not.
    #[test]
    fn client_header_values_read_back_as_passed() {
        let mut state = host_state();
        let long = vec![b'x'; 300];
        for round in 0..2 {
            for i in 0..20 {
                let text = format!("v{i}");
                let value = state.client_header_value(text.as_bytes());
                assert_eq!(
                    value.as_ref().map(|v| v.as_bytes()),
                    Some(text.as_bytes()),
                    "{round}"
                );
            }
            let value = state.client_header_value(&long);
            assert_eq!(value.map(|v| v.as_bytes().len()), Some(300));
        }
        assert_eq!(state.client_header_value(b"line\nbreak"), None);
    }

    /// A metric's first update numbers it, later ones name it by number; numbers the instance
    /// never gave, or that skip ahead or pass the cap, refuse the batch.
    #[test]
    fn metrics_are_updated_by_the_numbers_their_first_update_gave() {
        let mut state = host_state();
        let mut identity = vec![0];
        string(&mut identity, b"hits");
        identity.push(0);
        let number = |tag: u8, number: u32, identity: &[u8]| {
            let mut bytes = vec![tag];
            bytes.extend_from_slice(&number.to_le_bytes());
            bytes.extend_from_slice(identity);
            bytes.extend_from_slice(&1u64.to_le_bytes());
            bytes
        };
        let mut first = number(NUMBER_METRIC, 0, &identity);
        first.extend(number(NUMBERED_METRIC, 0, &[]));
        assert_eq!(state.apply_batch(&first), Ok(()));
        assert!(state.numbered_metric(0).is_some());
        assert_eq!(state.apply_batch(&number(NUMBERED_METRIC, 0, &[])), Ok(()));
        assert_eq!(
            state.apply_batch(&number(NUMBER_METRIC, 0, &identity)),
            Ok(())
        );

        let unknown = state.apply_batch(&number(NUMBERED_METRIC, 1, &[]));
        assert_eq!(
            unknown,
            Err("change 0 of the batch: no metric numbered 1 in this instance".to_owned())
        );
        let skips = state.apply_batch(&number(NUMBER_METRIC, 2, &identity));
        assert!(skips.unwrap_err().contains("skips numbers (next is 1)"));
        let past = state.apply_batch(&number(NUMBER_METRIC, 256, &identity));
        assert!(past.unwrap_err().contains("past the 256"));
        assert_eq!(
            state.apply_batch(&number(NUMBER_METRIC, 1, &identity)),
            Ok(())
        );
        assert!(state.numbered_metric(1).is_some());
    }

    #[test]
    fn a_metric_key_keeps_its_labels_in_order_and_checks_its_text() {
        let mut identity = vec![2];
        string(&mut identity, b"latency");
        identity.push(20);
        for i in 0..20u8 {
            string(&mut identity, format!("k{i}").as_bytes());
            string(&mut identity, b"v");
        }
        let (kind, name, labels) = metric_key(&identity).unwrap();
        assert_eq!((kind, name.as_str()), (MetricKind::Histogram, "latency"));
        let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        let expected: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
        assert_eq!(keys, expected);

        // Reading a change only steps over the text; a metric is checked when first used.
        let mut bad = vec![METRIC, 0];
        string(&mut bad, &[0xff, 0xfe]);
        bad.push(0);
        bad.extend_from_slice(&1u64.to_le_bytes());
        let Ok(Change::Metric { identity, .. }) = Change::read(&mut Reader { rest: &bad }) else {
            panic!("a metric");
        };
        assert!(metric_key(identity).unwrap_err().contains("UTF-8"));
        let mut unknown = vec![7];
        string(&mut unknown, b"x");
        unknown.push(0);
        assert!(
            metric_key(&unknown)
                .unwrap_err()
                .contains("unknown metric kind 7")
        );
    }

    /// The bytes come from a plugin: whatever they are, reading them ends in changes or an
    /// error, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic_the_reader() {
        let mut rng = fastrand::Rng::with_seed(21);
        for _ in 0..20_000 {
            let len = rng.usize(0..64);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            // Bias towards valid tags and small lengths so reads get past the first field.
            if let Some(first) = bytes.first_mut() {
                *first = rng.u8(0..10);
            }
            for chunk in bytes.chunks_mut(5).skip(1) {
                if rng.bool() {
                    chunk[0] = rng.u8(0..9);
                    chunk.iter_mut().skip(1).take(3).for_each(|b| *b = 0);
                }
            }
            let mut reader = Reader { rest: &bytes };
            while !reader.rest.is_empty() {
                match Change::read(&mut reader) {
                    Ok(Change::Metric { identity, .. } | Change::NumberMetric { identity, .. }) => {
                        let _ = metric_key(identity);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
    }

    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s);
    }

    #[test]
    fn the_reader_takes_fields_in_order_and_refuses_what_runs_past_the_end() {
        let mut bytes = vec![7u8];
        string(&mut bytes, b"x-name");
        bytes.extend_from_slice(&42u64.to_le_bytes());
        let mut reader = Reader { rest: &bytes };
        assert_eq!(reader.u8(), Ok(7));
        assert_eq!(reader.str(), Ok("x-name"));
        assert_eq!(reader.u64(), Ok(42));
        assert!(reader.rest.is_empty());

        // A length that claims more than is there, and a string that is not UTF-8.
        let mut short = Vec::new();
        short.extend_from_slice(&100u32.to_le_bytes());
        short.extend_from_slice(b"abc");
        assert_eq!(
            Reader { rest: &short }.str().unwrap_err().to_string(),
            "ends early: 100 bytes wanted, 3 left"
        );
        let mut bad = Vec::new();
        string(&mut bad, &[0xff, 0xfe]);
        assert_eq!(
            Reader { rest: &bad }.str().unwrap_err().to_string(),
            "a string is not UTF-8"
        );
        assert!(Reader { rest: &[] }.u8().is_err());
        assert!(Reader { rest: &[1, 2, 3] }.u32().is_err());
    }
}
